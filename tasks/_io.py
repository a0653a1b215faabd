"""Small file helpers shared by the stage shells.

Every output is written whole or not at all (mlcore/atomic.py): files go to a temporary name
and are renamed into place, directories are built beside their final path and swapped in. A
stage killed mid-write leaves the previous output as it was (and DVC, which sees the stage's
deps or outs differ from dvc.lock, reruns it)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from mlcore import atomic
from mlcore.errors import UserError
from tasks import _paths as P

# The stage shells call these as _io.<name>; what they do is mlcore.atomic's.
write_text, write_json, replacing = atomic.write_text, atomic.write_json, atomic.directory


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


def clear_checkpoint(path: Path) -> None:
    """Once a stage's outputs are saved its resume state has served its purpose."""
    shutil.rmtree(path, ignore_errors=True)


def write_csv(path: Path, table: pd.DataFrame | list[dict], columns: list[str] | None = None) -> None:
    """A table or a list of rows (learning curves: one row per evaluation) as CSV."""
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table, columns=columns)
    write_text(path, frame.to_csv(index=False))
