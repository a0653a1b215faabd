"""A seeded, stratified subsample of a split (the search's data budget, search.max_train_rows)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_subsample(labels: Sequence, n: int | None, seed: int) -> np.ndarray:
    """Sorted row positions of a subsample of `n` rows whose label shares match `labels`'.

    Deterministic: the same labels, n and seed give the same rows. Each label gets its
    share of n rounded down, the rows left over go to the labels with the largest
    remainders (ties to the label seen first), and every label keeps at least one row
    when n allows. n None or >= len(labels): every row."""
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    values, first, counts = np.unique(labels, return_index=True, return_counts=True)
    by_appearance = np.argsort(first)
    values, counts = values[by_appearance], counts[by_appearance]
    exact = counts * n / len(labels)
    take = np.floor(exact).astype(np.int64)
    if n >= len(values):
        take = np.maximum(take, 1)
    order = np.argsort(-(exact - take), kind="stable")
    for i in order[: max(0, n - int(take.sum()))]:
        take[i] += 1
    while take.sum() > n:  # the one-row minimum overshot: trim the largest labels
        take[np.argmax(take)] -= 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == value), size=k, replace=False)
              for value, k in zip(values, take, strict=True)]
    return np.sort(np.concatenate(chosen))
