"""A BERT-style WordPiece tokenizer with a deterministic vocabulary.

The vocabulary is learnt here rather than by the `tokenizers` WordPiece trainer, which
breaks ties between equally frequent pairs in hash-map order, so its vocabulary (and
token ids) changed from process to process. The learner below is the same algorithm
(BPE-style merges of the most frequent adjacent pair, non-initial pieces marked `##`)
with a canonical tie-break: highest count, then the lexicographically smallest pair.
The same texts and settings give the same vocabulary and ids in every process.
"""
from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import pairwise

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PREFIX = "##"  # marks a piece that continues a word (masking reads word boundaries from it)


def word_counts(texts: Iterable[str], normalizer, pre_tokenizer) -> Counter[str]:
    """How often each pre-tokenized word occurs, after the tokenizer's own normalization."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    return counts


def _merge_word(symbols: list[str], a: str, b: str, new: str, word: int, freq: int, stats: _PairStats) -> list[str]:
    """`symbols` with each adjacent (a, b) joined into `new`, left to right, moving the counts
    of the neighbouring pairs in `stats` (the count of (a, b) itself is dropped by the caller).
    Working on the output as it grows keeps runs such as (a, b, a, b) right: the second
    merge's left neighbour is the first merge's `new`."""
    out: list[str] = []
    i, n = 0, len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == a and symbols[i + 1] == b:
            if out:
                stats.move((out[-1], a), (out[-1], new), freq, word)
            if i + 2 < n:
                stats.move((b, symbols[i + 2]), (new, symbols[i + 2]), freq, word)
            out.append(new)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


class _PairStats:
    """Adjacent-pair counts over all words (each word weighted by its count), the words
    holding each pair (a superset: entries are not removed), and the pairs changed since the
    last `changes()`."""

    def __init__(self, splits: list[list[str]], freq: list[int]):
        self.count: dict[tuple[str, str], int] = defaultdict(int)
        self.where: dict[tuple[str, str], set[int]] = defaultdict(set)
        self.changed: set[tuple[str, str]] = set()
        for word, symbols in enumerate(splits):
            for pair in pairwise(symbols):
                self.count[pair] += freq[word]
                self.where[pair].add(word)

    def move(self, old: tuple[str, str], new: tuple[str, str], freq: int, word: int) -> None:
        self.count[old] -= freq
        self.count[new] += freq
        self.where[new].add(word)
        self.changed.update((old, new))

    def changes(self) -> list[tuple[int, str, str]]:
        """Heap entries for the changed pairs still present; pairs whose count fell to 0 go."""
        entries = []
        for pair in self.changed:
            if self.count[pair] > 0:
                entries.append((-self.count[pair], *pair))
            else:
                del self.count[pair]
        self.changed = set()
        return entries


def learn_vocab(counts: dict[str, int], vocab_size: int, special_tokens: list[str] = SPECIAL_TOKENS) -> list[str]:
    """The vocabulary, in id order: the special tokens, the alphabet (sorted), its `##`
    continuation pieces (sorted), then one token per merge until `vocab_size` is reached.
    Each merge joins the adjacent pair with the highest count over all words; ties go to the
    lexicographically smallest (left, right) pair, so the result depends only on `counts`
    (the heap orders entries by their values alone, whatever order they were pushed in)."""
    words = sorted(counts)
    freq = [counts[w] for w in words]
    splits = [[w[0]] + [PREFIX + c for c in w[1:]] for w in words]
    vocab = list(dict.fromkeys([*special_tokens, *sorted({c for w in words for c in w}),
                                *sorted({piece for s in splits for piece in s[1:]})]))
    known = set(vocab)
    stats = _PairStats(splits, freq)
    heap = [(-c, a, b) for (a, b), c in stats.count.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        neg, a, b = heapq.heappop(heap)
        if stats.count.get((a, b)) != -neg:
            continue  # stale entry: the pair's count has changed since it was pushed
        new = a + b[len(PREFIX):]  # the right side never starts a word, so it always has the prefix
        if new not in known:
            vocab.append(new)
            known.add(new)
        for word in stats.where.pop((a, b)):
            splits[word] = _merge_word(splits[word], a, b, new, word, freq[word], stats)
        del stats.count[a, b]
        stats.changed.discard((a, b))
        for entry in stats.changes():
            heapq.heappush(heap, entry)
    return vocab


def build_tokenizer(vocab: list[str], max_length: int) -> PreTrainedTokenizerFast:
    """The uncased BERT pipeline (normalizer, pre-tokenizer, [CLS] $A [SEP]) around `vocab`:
    the same tokens and ids as a standard `BertTokenizerFast` loaded from that vocab.txt."""
    ids = {token: i for i, token in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", continuing_subword_prefix=PREFIX))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=PREFIX)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def train_wordpiece(texts: Iterable[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """A BERT-style uncased WordPiece tokenizer trained on `texts`, reproducibly."""
    counts = word_counts(texts, normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer())
    return build_tokenizer(learn_vocab(counts, vocab_size), max_length)


def vocab_digest(tokenizer) -> str:
    """Identity of a vocabulary: a checkpoint is resumed only onto the one it was trained with."""
    return hashlib.md5(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
