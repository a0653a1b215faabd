"""Content hashes (md5, as DVC uses for files)."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def file_md5(path: str | Path) -> str:
    h = hashlib.md5()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_digest(paths: Iterable[str | Path]) -> str:
    """One digest over several files' names and contents (directories are skipped)."""
    h = hashlib.md5()
    for p in map(Path, paths):
        if p.is_file():
            h.update(p.name.encode())
            h.update(file_md5(p).encode())
    return h.hexdigest()
