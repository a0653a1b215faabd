"""Small file helpers shared by the stage shells.

Every output is written whole or not at all: files go to a temporary name and are renamed
into place, directories are built beside their final path and swapped in. A stage killed
mid-write leaves the previous output as it was (and DVC, which sees the stage's deps or outs
differ from dvc.lock, reruns it)."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from mlcore.errors import UserError
from tasks import _paths as P


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(path)
    partial.write_text(text)
    os.replace(partial, path)  # atomic on one filesystem


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, produced_by: str):
    require(path, produced_by)
    return json.loads(path.read_text())


def require(path: Path, produced_by: str) -> Path:
    if not path.exists():
        raise UserError(f"{path}: missing. It is written by the `{produced_by}` stage; run that stage first "
                        f"(`dvc repro {produced_by}` or the Prefect flow).")
    return path


def read_split(path: Path) -> pd.DataFrame:
    return pd.read_parquet(require(path, "prepare"))


def label_map() -> dict[str, int]:
    return read_json(P.LABEL_MAP, "prepare")


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A directory output rewritten whole (nothing stale from an earlier run survives), built in
    a sibling folder and swapped in only when the block completes."""
    partial, old = _partial(path), path.with_name(f".{path.name}.old")
    for leftover in (partial, old):  # from a run killed in here
        shutil.rmtree(leftover, ignore_errors=True)
    partial.mkdir(parents=True)
    yield partial
    if path.exists():
        path.rename(old)
    partial.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def clear_checkpoint(path: Path) -> None:
    """Once a stage's outputs are saved its resume state has served its purpose."""
    shutil.rmtree(path, ignore_errors=True)


def write_csv(path: Path, table: pd.DataFrame | list[dict], columns: list[str] | None = None) -> None:
    """A table or a list of rows (learning curves: one row per evaluation) as CSV."""
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table, columns=columns)
    write_text(path, frame.to_csv(index=False))
