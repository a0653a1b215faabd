"""The two error boundaries (mlcore/errors.py): readers turn any decode failure into a UserError
naming the file; entry points print a UserError as one paragraph (exit 2) and anything else as
a bug, with its traceback, one line saying so, and a copy in logs/errors.log. And before a path
is opened, path_problem says why the operating system would refuse it."""
import bz2
import os
from pathlib import Path

import pytest

from mlcore.errors import UserError, entry_point, path_problem, reading


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


def test_path_problem_says_why_the_os_refuses_a_path_and_names_the_culprit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("r.csv").write_text("text,label\n")
    Path("broken.csv").symlink_to("gone.csv")
    Path("loop.csv").symlink_to("loop.csv")
    os.mkfifo("pipe")
    Path("ckpt").mkdir()
    Path("ckpt/config.json").write_text("{}")
    Path("ckpt/model.safetensors").symlink_to("gone.safetensors")
    expected = {
        ("r.csv", "file"): None,
        ("missing.csv", "file"): None,  # the readers say "not found", with their own advice
        ("broken.csv", "file"): "broken.csv: a symbolic link to 'gone.csv', which does not exist (a broken link)",
        ("loop.csv", "file"): "loop.csv: a loop of symbolic links",
        ("r.csv/rows.csv", "file"): "r.csv/rows.csv: a part of its path is a file, not a directory",
        ("ckpt", "file"): "ckpt: is a directory, not a file",
        ("r.csv", "dir"): "r.csv: is a file, not a directory",
        ("pipe", "file"): "pipe: not a regular file",
        ("ckpt", "dir"): "ckpt/model.safetensors: a symbolic link to 'gone.safetensors', which does not exist",
    }
    for (path, expect), start in expected.items():
        problem = path_problem(path, expect)
        assert (problem is None) if start is None else problem.startswith(start), (path, expect, problem)


def test_path_problem_names_a_file_or_folder_this_user_may_not_read(tmp_path):
    (tmp_path / "ckpt" / "sub").mkdir(parents=True)
    (tmp_path / "r.csv").write_text("x")
    (tmp_path / "r.csv").chmod(0)
    (tmp_path / "ckpt" / "sub").chmod(0)
    try:
        if os.access(tmp_path / "r.csv", os.R_OK):
            pytest.skip("this user reads mode-000 files (root); test_malformed_inputs drops that power")
        assert "r.csv: permission denied" in path_problem(tmp_path / "r.csv", "file")
        assert "ckpt/sub: permission denied" in path_problem(tmp_path / "ckpt", "dir")
    finally:
        (tmp_path / "ckpt" / "sub").chmod(0o700)


def test_an_os_refusal_that_dvc_meets_in_the_workspace_is_a_user_error_naming_the_path(tmp_path, monkeypatch):
    """The inputs are checked before DVC (tasks/_inputs.py); DVC also reads every folder of the
    workspace, and an unreadable one there stops its status (seen: '<folder>/.gitignore')."""
    from dvc.repo import Repo

    from tasks import _dvc_state

    monkeypatch.chdir(tmp_path)
    Repo.init(str(tmp_path), no_scm=True).close()

    def raising(err):
        def status(self, *args, **kwargs):
            raise err
        return status

    monkeypatch.setattr(Repo, "status", raising(PermissionError(13, "Permission denied", "closed/.gitignore")))
    with pytest.raises(UserError, match=r"^closed/\.gitignore: permission denied.*DVC met it while checking"):
        _dvc_state.out_of_date()
    monkeypatch.setattr(Repo, "status", raising(FileNotFoundError(2, "No such file or directory", "gone")))
    with pytest.raises(FileNotFoundError):  # not the OS refusing a path the user has: a bug, traceback and all
        _dvc_state.out_of_date()
