"""Files, directories and links written whole or not at all: the one implementation every writer uses.

A write goes to a hidden `.<name>.partial` beside its final path (a rename is atomic only
within one filesystem) and is renamed into place once complete, so a kill mid-write leaves the
previous content as it was; a killed writer's leftover partial is overwritten by the next.
Nothing is fsynced: what these writes guard against is a killed process, not a lost machine.

Standard library only, so every package may import it (the core, the stage shells, the flows).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def partial_path(path: Path, tag: str = "") -> Path:
    """Beside `path`, hidden, and recognisably unfinished; `tag` keeps racing writers apart."""
    return path.with_name(f".{path.name}{'.' + tag if tag else ''}.partial")


@contextlib.contextmanager
def file(path: Path) -> Iterator[Path]:
    """Yields the temporary path to write; on success it replaces `path`, on failure it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with file(path) as partial:
        partial.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    with file(path) as partial:
        partial.write_text(text)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


@contextlib.contextmanager
def directory(path: Path) -> Iterator[Path]:
    """A directory rewritten whole (nothing stale from an earlier write survives), built in a
    sibling folder and swapped in only when the block completes. The swap is two renames: the
    old one aside, the new one in (a directory cannot replace a non-empty one in one step)."""
    partial, old = partial_path(path), path.with_name(f".{path.name}.old")
    for leftover in (partial, old):  # from a writer killed in here
        shutil.rmtree(leftover, ignore_errors=True)
    partial.mkdir(parents=True)
    yield partial
    if path.exists():
        path.rename(old)
    partial.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def symlink(target: str, link: Path) -> None:
    """Point `link` at `target`: a kill leaves the old link or the new one, never none."""
    link.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(link, tag=str(os.getpid()))  # two processes may refresh the same link at once
    partial.unlink(missing_ok=True)
    os.symlink(target, partial)
    os.replace(partial, link)
