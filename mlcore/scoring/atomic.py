"""Files written whole or not at all: to a temporary name in the same directory, then renamed.

The core cannot use tasks/_io.py (mlcore never imports the shells); this is the same rule."""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path


def partial_path(path: Path) -> Path:
    """Beside `path` (os.replace is atomic within one filesystem), hidden, and recognisably unfinished."""
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields the temporary path to write; on success it replaces `path`, on failure it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_json(path: Path, obj) -> None:
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
