"""The two error boundaries (mlcore/errors.py): readers turn any decode failure into a UserError
naming the file; entry points print a UserError as one paragraph (exit 2) and anything else as
a bug, with its traceback, one line saying so, and a copy in logs/errors.log."""
import bz2

import pytest

from mlcore.errors import UserError, entry_point, reading


def test_reading_names_the_file_for_every_kind_of_decode_failure(tmp_path):
    truncated = tmp_path / "x.bz2"
    truncated.write_bytes(bz2.compress(b"a,b\n" * 1000)[:40])
    for action in (lambda: bz2.decompress(truncated.read_bytes()),   # EOFError / OSError
                   lambda: b"caf\xe9".decode("utf-8"),                  # UnicodeDecodeError
                   lambda: int("many"),                                 # ValueError
                   lambda: (tmp_path / "missing").read_text()):         # OSError
        with pytest.raises(UserError, match=r"x\.bz2: could not be read as csv: .*Fix it\."):
            with reading(truncated, "csv", "Fix it."):
                action()


def test_reading_lets_a_user_error_and_a_bug_through_unchanged(tmp_path):
    with pytest.raises(UserError, match="^as it was$"), reading(tmp_path, "csv", "fix"):
        raise UserError("as it was")
    with pytest.raises(KeyError), reading(tmp_path, "csv", "fix"):
        raise KeyError("a bug, not a bad file")


def test_entry_point_prints_a_user_error_as_one_paragraph(capsys):
    @entry_point
    def main(argv=None):
        raise UserError("data.csv: column 'text' is missing. Set prepare.text_column.")

    assert main([]) == 2
    err = capsys.readouterr().err
    assert err == "error: data.csv: column 'text' is missing. Set prepare.text_column.\n"


def test_entry_point_shows_a_bug_with_its_traceback_and_where_the_log_is(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    @entry_point
    def main(argv=None):
        return {}["missing"]

    assert main([]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err
    assert "this is a bug in the pipeline" in err.splitlines()[-1] and "logs/errors.log" in err
    assert "KeyError: 'missing'" in (tmp_path / "logs" / "errors.log").read_text()
