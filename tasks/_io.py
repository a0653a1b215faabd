"""Small file helpers shared by the stage shells."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from mlcore.errors import UserError
from tasks import _paths as P


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


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


def fresh_dir(path: Path) -> Path:
    """Stage outputs are rewritten whole, so nothing stale from an earlier run survives."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def clear_checkpoint(path: Path) -> None:
    """Once a stage's outputs are saved its resume state has served its purpose."""
    shutil.rmtree(path, ignore_errors=True)


def write_csv(path: Path, table: pd.DataFrame | list[dict], columns: list[str] | None = None) -> None:
    """A table or a list of rows (learning curves: one row per evaluation) as CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table, columns=columns)
    frame.to_csv(path, index=False)
