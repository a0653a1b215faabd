"""Tokenise once, then batch with dynamic padding (each batch padded to its own longest text)."""
from __future__ import annotations

import functools
import multiprocessing
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


# max_length auto: the 99th percentile of the training texts' token lengths. Only 1% of
# texts lose their tail, and with length-grouped batches the longest 1-5% cost little
# (they pad only their own batches), so p95 would save little and cut 5x more texts.
AUTO_PERCENTILE = 99.0
_NO_LIMIT = 1_000_000  # tokenizers without a limit report a huge sentinel (VERY_LARGE_INTEGER)


@dataclass(frozen=True)
class LengthChoice:
    """The tokens a stage keeps per text, what the setting was, and what it cuts."""
    max_length: int
    setting: int | str  # the params.yaml value: an integer, or "auto"
    truncated_pct: float  # share of the training texts longer than max_length, in percent
    limit: int | None  # the model's own limit (positions), None when unknown

    def report(self) -> dict:
        """For a stage's report and logged params (max_length_setting: "auto" or the integer set)."""
        return {"max_length": self.max_length, "max_length_setting": self.setting,
                "truncated_pct": round(self.truncated_pct, 3)}

    def describe(self) -> str:
        return f"max_length {self.max_length} (truncates {self.truncated_pct:.2f}% of train)"


def resolve_max_length(setting: int | str, lengths: Sequence[int], limit: int | None,
                       percentile: float = AUTO_PERCENTILE) -> LengthChoice:
    """An integer setting is kept as it is (never capped: it behaves as it always did).
    "auto": the `percentile` of `lengths` (token counts with special tokens), rounded up,
    capped by `limit`, and at least 8. truncated_pct: share of `lengths` above the value."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if setting == "auto":
        value = int(np.ceil(np.percentile(lengths, percentile))) if len(lengths) else 8
        value = max(8, min(value, limit) if limit else value)
    elif isinstance(setting, int) and not isinstance(setting, bool):
        value = setting
    else:
        raise ValueError(f"max_length must be an integer or 'auto', not {setting!r}")
    truncated = 100.0 * float((lengths > value).mean()) if len(lengths) else 0.0
    return LengthChoice(max_length=value, setting=setting, truncated_pct=truncated, limit=limit)


def length_limit(tokenizer, config=None) -> int | None:
    """The most tokens the model takes: the tokenizer's model_max_length and the config's
    max_position_embeddings, whichever is smaller (unset ones are ignored)."""
    limits = [getattr(tokenizer, "model_max_length", None), getattr(config, "max_position_embeddings", None)]
    limits = [int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < _NO_LIMIT]
    return min(limits, default=None)


def token_lengths(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Each text's token count with the special tokens, untruncated."""
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))


def choose_max_length(setting: int | str, tokenizer, texts: Sequence[str], config=None) -> LengthChoice:
    """A stage's max_length over its training texts (see resolve_max_length)."""
    return resolve_max_length(setting, token_lengths(tokenizer, texts), length_limit(tokenizer, config))


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
    # Shuffle the full batches only: a short batch moved into the middle would shift
    # every later batch boundary and undo the grouping.
    full = len(order) // batch_size
    return np.concatenate([batches_[i] for i in rng.permutation(full)] + batches_[full:])


def epoch_order(data: Encoded, s, epoch: int) -> np.ndarray:
    """The row order of one epoch, from (seed, epoch) alone: a resumed run replays it exactly."""
    rng = np.random.default_rng([s.seed, epoch])
    if s.length_grouping:
        return length_grouped_order(data, s.batch_size, rng)
    return rng.permutation(len(data))


class _Rows(torch.utils.data.Dataset):
    def __init__(self, data: Encoded):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.data.input_ids[i], None if self.data.labels is None else int(self.data.labels[i])


def _collate_rows(rows, pad_id: int) -> dict[str, torch.Tensor]:
    batch = collate([ids for ids, _ in rows], pad_id)
    if rows[0][1] is not None:
        batch["labels"] = torch.tensor([label for _, label in rows], dtype=torch.long)
    return batch


def loader(data: Encoded, batch_size: int, pad_id: int, order: np.ndarray, num_workers: int = 0,
           device: torch.device | None = None):
    """Padded batches in `order`. Collating is cheap next to a forward pass, so
    num_workers=0 (in-process) is the default; workers help when the model is fast (GPU)."""
    if num_workers == 0:
        return (batch for _, batch in batches(data, batch_size, pad_id, order=order))
    index_batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return torch.utils.data.DataLoader(
        _Rows(data), batch_sampler=index_batches, num_workers=num_workers,
        collate_fn=functools.partial(_collate_rows, pad_id=pad_id),
        pin_memory=device is not None and device.type == "cuda",
        # Its own generator: drawing worker seeds from the global RNG would shift dropout
        # masks, and the run would differ from the in-process one.
        generator=torch.Generator().manual_seed(0),
        multiprocessing_context=_worker_context(),
    )


def _worker_context():
    """Workers fork from a clean server process, not from this one: a plain fork copies
    whatever threads and exit hooks the host process holds (Prefect's, MLflow's), and
    such workers can die on exit. The server imports torch once, so forks stay cheap."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["mlcore.engine.batching"])
    return ctx
