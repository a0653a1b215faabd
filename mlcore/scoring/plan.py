"""The chunk plan: which rows each chunk scores.

Rows are sorted by text length so that a chunk's texts pad to about the same length (a long
text among short ones makes the whole batch as wide as it). The sort is stable and depends on
the texts and chunk size alone, so a resumed run cuts exactly the same chunks as the killed one.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def chunk_plan(texts: pd.Series, chunk_rows: int) -> list[np.ndarray]:
    """Chunks of at most `chunk_rows` row positions (the index of `texts`), shortest texts first."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    positions = texts.index.to_numpy(dtype=np.int64)
    order = np.argsort(texts.str.len().to_numpy(), kind="stable")
    ordered = positions[order]
    return [ordered[start:start + chunk_rows] for start in range(0, len(ordered), chunk_rows)]
