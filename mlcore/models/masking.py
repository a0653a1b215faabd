"""Masked-language-model data: BERT token/whole-word masking and block packing (pure torch)."""
from __future__ import annotations

import torch

# Markers a tokenizer puts on a piece: WordPiece marks continuations, the others mark word starts.
CONTINUATION_MARKER = "##"
START_MARKERS = ("\u2581", "\u0120")  # SentencePiece "▁", GPT-2/RoBERTa byte-level "Ġ"


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: list[int],
    mask_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator,
    word_starts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick `probability` of real tokens; 80% -> [MASK], 10% random, 10% kept.

    With `word_starts` (bool, True where a token begins a word) whole words are picked instead,
    and the 80/10/10 class is drawn once per word so a word is never half [MASK], half visible.
    Returns (masked inputs, labels) with label -100 where no prediction is made.
    """
    labels = input_ids.clone()
    candidates = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids))
    if word_starts is None:
        chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & candidates
        roll = torch.rand(input_ids.shape, generator=generator)
    else:
        word = _word_index(candidates, word_starts.bool())
        n_words = max(int(word.max()) + 1, 1)  # at least one draw keeps indexing valid
        word_chosen = torch.rand(n_words, generator=generator) < probability
        word_roll = torch.rand(n_words, generator=generator)
        safe = word.clamp(min=0)  # non-candidate ids are meaningless; `& candidates` drops them
        chosen, roll = word_chosen[safe] & candidates, word_roll[safe]
    labels[~chosen] = -100
    masked = input_ids.clone()
    masked[chosen & (roll < 0.8)] = mask_id
    randomise = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[randomise] = torch.randint(vocab_size, input_ids.shape, generator=generator)[randomise]
    return masked, labels


def _word_index(candidates: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """A batch-wide word number for every candidate token, -1 before the first word.

    A continuation right after a special/pad token or at column 0 (a packed block that begins
    mid-word) still opens a word: its head lies outside what the model sees, so the visible
    tail is masked as one word of its own rather than joined to an unrelated neighbour.
    """
    previous = torch.zeros_like(candidates)
    previous[:, 1:] = candidates[:, :-1]
    opens = candidates & (starts | ~previous)
    # Row-major cumsum numbers words across the whole batch; every row's first candidate opens
    # a word, so no word spans two rows.
    return opens.flatten().cumsum(0).view(candidates.shape) - 1


def continuation_ids(tokenizer) -> torch.Tensor:
    """Bool tensor over vocabulary ids: True where a piece continues the previous word.

    Rule: the marker that prefixes most vocabulary entries decides the scheme. WordPiece ("##")
    marks continuations, so those pieces are continuations. SentencePiece ("▁") and byte-level
    BPE ("Ġ") mark word starts, so every piece *without* the marker is a continuation
    (punctuation glued to a word, e.g. "Ġhello" ","). Special tokens are never continuations.
    Counting instead of checking presence matters: GPT-2's vocab contains "##" as markdown.
    """
    vocab = tokenizer.get_vocab()
    counts = {m: sum(t.startswith(m) for t in vocab) for m in (CONTINUATION_MARKER, *START_MARKERS)}
    marker = max(counts, key=counts.get)
    if counts[marker] == 0:
        raise ValueError("tokenizer vocabulary has no '##', '▁' or 'Ġ' pieces; cannot find words")
    continuation = torch.zeros(max(vocab.values()) + 1, dtype=torch.bool)
    for token, index in vocab.items():
        continuation[index] = token.startswith(marker) == (marker == CONTINUATION_MARKER)
    continuation[list(tokenizer.all_special_ids)] = False
    return continuation


def word_starts(input_ids: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """True where a token begins a word (it is not a continuation piece)."""
    return ~continuation[input_ids]


def pack_blocks(
    sequences: list[list[int]], block_size: int, cls_id: int, sep_id: int, min_last: int = 8
) -> list[list[int]]:
    """Concatenate texts (SEP between them) and cut into [CLS] + block_size-2 tokens + [SEP].

    Packing wastes no compute on padding. Cuts ignore word boundaries, so a block may begin
    mid-word; whole-word masking treats that fragment as a word of its own (see _word_index).
    The last partial block is kept only with at least `min_last` content tokens: shorter
    scraps carry too little context to be worth a padded batch row.
    """
    if block_size < 3:
        raise ValueError(f"block_size must be at least 3, got {block_size}")
    stream: list[int] = []
    for sequence in sequences:
        content = sequence[1:] if sequence[:1] == [cls_id] else sequence
        content = content[:-1] if content[-1:] == [sep_id] else content
        if content:  # an empty text would only add a doubled separator
            stream.extend(([sep_id] if stream else []) + content)
    width = block_size - 2
    chunks = [stream[i : i + width] for i in range(0, len(stream), width)]
    if chunks and len(chunks[-1]) < width and len(chunks[-1]) < min_last:
        chunks.pop()
    return [[cls_id, *chunk, sep_id] for chunk in chunks]
