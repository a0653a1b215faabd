"""Tokenise once, then batch with dynamic padding (each batch padded to its own longest text)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Encoded:
    input_ids: list[list[int]]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(tokenizer, texts: Sequence[str], max_length: int, labels: Sequence[int] | None = None) -> Encoded:
    ids = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    return Encoded(ids, None if labels is None else np.asarray(labels, dtype=np.int64))


def collate(seqs: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def batches(
    data: Encoded, batch_size: int, pad_id: int, order: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Yield (row indices, padded batch). `order` sets the row order (shuffled for training)."""
    order = np.arange(len(data)) if order is None else order
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate([data.input_ids[i] for i in idx], pad_id)
        if data.labels is not None:
            batch["labels"] = torch.from_numpy(data.labels[idx])
        yield idx, batch


def by_length(data: Encoded) -> np.ndarray:
    """Row order from shortest to longest: inference batches then carry almost no padding."""
    return np.argsort([len(s) for s in data.input_ids], kind="stable")


def length_grouped_order(data: Encoded, batch_size: int, rng: np.random.Generator, window: int = 64) -> np.ndarray:
    """A shuffled order in which each batch holds texts of similar length.

    Rows are shuffled, cut into windows of `window` batches, sorted by length
    inside each window, and the resulting batches are shuffled again: batches
    stay random but carry little padding.
    """
    lengths = np.fromiter((len(s) for s in data.input_ids), dtype=np.int64, count=len(data))
    order = rng.permutation(len(data))
    span = batch_size * window
    chunks = [order[i : i + span] for i in range(0, len(order), span)]
    order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
    batches_ = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return np.concatenate([batches_[i] for i in rng.permutation(len(batches_))])
