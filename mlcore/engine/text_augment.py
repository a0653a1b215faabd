"""Text augmentation on token ids: word dropout, random span deletion, adjacent-word swaps and
word masking, applied to the training rows once per epoch, before batching.

Pure: (Encoded, TokenAugment, seed, epoch) -> Encoded. The randomness comes from (seed, epoch)
alone, like the epoch's row order: a resumed run rebuilds the same epoch, and DataLoader workers
receive rows already augmented (nothing random happens in a worker). The first and last ids
([CLS] and [SEP], which truncation keeps too) never change, a text never loses all its words, and
labels are shared, not copied. The ops work on words (a piece and the pieces that continue it) when
the tokenizer's continuation pieces are given, so a deletion or a swap never strands a "##ing".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlcore.engine.batching import Encoded

OPS = ("dropout", "span", "swap", "mask")  # applied in this order, whatever order the knob lists
MAX_RATE = 0.2  # each op's share of the words at strength 1 (EDA's small-data alpha is 0.05-0.1)
# Apart from epoch_order's stream, which is drawn from [seed, epoch]: the augmentation must not
# reuse the permutation's random numbers.
_STREAM = 0x7E47


@dataclass(frozen=True, eq=False)
class TokenAugment:
    """strength 0..1: each op touches about MAX_RATE x strength of a text's words.
    dropout deletes words, span deletes one contiguous run of words, swap exchanges neighbouring
    words, mask replaces a word's pieces by `mask_id` (the tokenizer's [MASK], else [UNK])."""
    strength: float
    ops: tuple[str, ...]
    mask_id: int
    continuation: np.ndarray | None = None  # bool per vocabulary id; None: every token is a word

    def __post_init__(self):
        if not 0 <= self.strength <= 1:
            raise ValueError(f"augmentation strength must lie in [0, 1], not {self.strength}")
        unknown = set(self.ops) - set(OPS)
        if unknown:
            raise ValueError(f"unknown text augmentation ops {sorted(unknown)}; choose from {list(OPS)}")

    @property
    def rate(self) -> float:
        return MAX_RATE * self.strength

    @property
    def active(self) -> bool:
        return self.strength > 0 and bool(self.ops)


def words(ids: list[int], continuation: np.ndarray | None) -> list[list[int]]:
    """`ids` cut into words: each piece that continues a word joins the one before it."""
    out: list[list[int]] = []
    for token in ids:
        if out and continuation is not None and token < len(continuation) and continuation[token]:
            out[-1].append(token)
        else:
            out.append([token])
    return out


def _dropout(w: list[list[int]], aug: TokenAugment, rng: np.random.Generator) -> list[list[int]]:
    keep = rng.random(len(w)) >= aug.rate
    if not keep.any():
        keep[rng.integers(len(w))] = True  # never an empty text
    return [word for word, k in zip(w, keep, strict=True) if k]


def _span(w: list[list[int]], aug: TokenAugment, rng: np.random.Generator) -> list[list[int]]:
    # As many words on average as dropout deletes, but one contiguous run: a clause goes missing.
    length = min(int(rng.binomial(len(w), aug.rate)), len(w) - 1)
    start = int(rng.integers(len(w) - length + 1))
    return w[:start] + w[start + length:]


def _swap(w: list[list[int]], aug: TokenAugment, rng: np.random.Generator) -> list[list[int]]:
    w, draws, i = list(w), rng.random(max(len(w) - 1, 0)), 0
    while i < len(w) - 1:
        if draws[i] < aug.rate:
            w[i], w[i + 1] = w[i + 1], w[i]
            i += 2  # a word moves once: no chain carrying one word down the text
        else:
            i += 1
    return w


def _mask(w: list[list[int]], aug: TokenAugment, rng: np.random.Generator) -> list[list[int]]:
    hit = rng.random(len(w)) < aug.rate
    return [[aug.mask_id] * len(word) if h else word for word, h in zip(w, hit, strict=True)]


def augment_ids(ids: list[int], aug: TokenAugment, rng: np.random.Generator) -> list[int]:
    """One text's ids augmented; the first and last id are kept as they are."""
    if len(ids) < 3 or not aug.active:
        return ids
    w = words(ids[1:-1], aug.continuation)
    for op in OPS:
        if op in aug.ops:
            w = _OPS[op](w, aug, rng)
    return [ids[0], *(token for word in w for token in word), ids[-1]]


_OPS = {"dropout": _dropout, "span": _span, "swap": _swap, "mask": _mask}


def augmented(data: Encoded, aug: TokenAugment | None, seed: int, epoch: int) -> Encoded:
    """The training rows of one epoch, augmented from (seed, epoch) alone; `data` itself when off."""
    if aug is None or not aug.active:
        return data
    rng = np.random.default_rng([seed, epoch, _STREAM])
    return Encoded([augment_ids(ids, aug, rng) for ids in data.input_ids], data.labels)
