"""mlcore.atomic: a write that fails leaves the previous content; one that completes leaves no partial."""
import os

import pytest

from mlcore import atomic


def test_a_failed_file_write_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic.write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), atomic.file(path) as partial:
        partial.write_text("half")
        raise RuntimeError
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]


def test_a_directory_is_replaced_whole(tmp_path):
    path = tmp_path / "model"
    with atomic.directory(path) as out:
        (out / "stale").write_text("x")
    with atomic.directory(path) as out:
        (out / "fresh").write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in path.iterdir()) == ["fresh"]


def test_a_link_is_repointed_in_place(tmp_path):
    link = tmp_path / "models" / "checkpoint"
    atomic.symlink("a", link)
    atomic.symlink("b", link)
    assert os.readlink(link) == "b"
    assert sorted(p.name for p in link.parent.iterdir()) == ["checkpoint"]
