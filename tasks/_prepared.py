"""prepare's splits, computed once per process.

The pipeline's command line computes them before Prefect starts, to fail early on bad data
(flows/summary.check_inputs); the flow then runs the prepare stage in the same process, which
takes them instead of reading and splitting the data again. Under `dvc repro` each stage is a
process of its own and prepare computes them itself. The key is the prepare section and each
input file's size and modification time, so changed data or params are never served stale.
"""
from __future__ import annotations

import os

from mlcore.config import PrepareConfig
from mlcore.data import dataset

_kept: dict[str, dataset.Prepared] = {}


def _key(p: PrepareConfig) -> str | None:
    """None when an input cannot be read: nothing is kept, and dataset.prepare says why. A folder of
    images is keyed by the folder's own time, which misses an image edited in place within the
    seconds between the pre-flight check and prepare."""
    files = [p.input] + ([p.test_input] if p.test_input else [])
    try:
        stats = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    except OSError:
        return None
    return f"{p.model_dump_json()}|{stats}"


def compute_and_keep(p: PrepareConfig) -> None:
    """Compute the splits (raising what prepare would raise on bad data) and keep them for prepare."""
    _kept.clear()
    key, splits = _key(p), dataset.prepare(p)
    if key is not None:
        _kept[key] = splits


def take(p: PrepareConfig) -> dataset.Prepared:
    """The kept splits when they were computed from these params and files, else computed now.
    Taking them releases them: the process holds one copy of the data, and only until prepare."""
    key = _key(p)
    kept = _kept.pop(key, None) if key is not None else None
    _kept.clear()
    return kept if kept is not None else dataset.prepare(p)
