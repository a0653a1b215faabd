"""MLM data: BERT token and whole-word masking, word boundaries from vocabularies, block packing."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mlcore.models.masking import continuation_ids, mask_tokens, pack_blocks, word_starts

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = [PAD, CLS, SEP, MASK]
VOCAB = 1_000_000  # random replacements almost never equal the original or [MASK]


def _random_batch(rows=64, length=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 5000, (rows, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=g)
    attention = (torch.arange(length) < lengths[:, None]).long()
    ids[:, 0] = CLS
    ids[torch.arange(rows), lengths - 1] = SEP
    ids[attention == 0] = PAD
    return ids, attention


def _mask(ids, attention, seed=0, starts=None, probability=0.15):
    g = torch.Generator().manual_seed(seed)
    return mask_tokens(ids, attention, SPECIAL, MASK, VOCAB, probability, g, word_starts=starts)


def _reference_mask_tokens(input_ids, attention_mask, special_ids, mask_id, vocab_size, probability, generator):
    # Frozen copy of the token-level masking that pretraining used before whole-word masking, so
    # runs seeded before the move reproduce the same masks.
    labels = input_ids.clone()
    candidates = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids))
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & candidates
    labels[~chosen] = -100
    masked = input_ids.clone()
    roll = torch.rand(input_ids.shape, generator=generator)
    masked[chosen & (roll < 0.8)] = mask_id
    randomise = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[randomise] = torch.randint(vocab_size, input_ids.shape, generator=generator)[randomise]
    return masked, labels


def test_token_level_path_matches_the_previous_implementation():
    ids, attention = _random_batch(8, 64)
    expected = _reference_mask_tokens(ids, attention, SPECIAL, MASK, VOCAB, 0.15, torch.Generator().manual_seed(3))
    for got, want in zip(_mask(ids, attention, seed=3), expected, strict=True):
        assert torch.equal(got, want)


def test_masking_rate_and_80_10_10_split():
    ids, attention = _random_batch()
    masked, labels = _mask(ids, attention)
    candidates = (attention == 1) & ~torch.isin(ids, torch.tensor(SPECIAL))
    chosen = labels != -100
    assert abs(chosen.sum() / candidates.sum() - 0.15) < 0.01
    as_mask = (masked[chosen] == MASK).float().mean()
    kept = (masked[chosen] == ids[chosen]).float().mean()
    assert abs(as_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.015
    assert abs(1 - as_mask - kept - 0.1) < 0.015  # the rest became random ids


@pytest.mark.parametrize("whole_word", [False, True])
def test_specials_and_padding_are_never_chosen_and_labels_hold_originals(whole_word):
    ids, attention = _random_batch(16, 128)
    starts = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.6) if whole_word else None
    masked, labels = _mask(ids, attention, starts=starts, probability=0.5)
    protected = (attention == 0) | torch.isin(ids, torch.tensor(SPECIAL))
    chosen = labels != -100
    assert chosen.any() and not (chosen & protected).any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])  # only chosen tokens are ever altered


@pytest.mark.parametrize("whole_word", [False, True])
def test_same_seed_same_masks_other_seed_other_masks(whole_word):
    ids, attention = _random_batch(8, 128)
    starts = (ids % 3 != 0) if whole_word else None
    first, again, other = (_mask(ids, attention, seed=s, starts=starts) for s in (7, 7, 8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


def _words(ids, attention, starts):
    """Token positions of each word by the documented rule (independent of the implementation)."""
    words = []
    for row in range(ids.shape[0]):
        current = None
        for col in range(ids.shape[1]):
            if attention[row, col] == 0 or int(ids[row, col]) in SPECIAL:
                current = None
                continue
            if starts[row, col] or current is None:
                current = []
                words.append(current)
            current.append((row, col))
    return words


def _word_batch(rows=200):
    # Rows of 1-4 token words; some rows open mid-word (as a packed block may) or hold a SEP
    # between two texts, whose following continuation must begin a word of its own.
    g = torch.Generator().manual_seed(0)
    ids, starts = torch.full((rows, 40), PAD), torch.zeros((rows, 40), dtype=torch.bool)
    for row in range(rows):
        col = 0 if row % 3 == 0 else 1
        ids[row, 0] = CLS
        while col < 30:
            size = int(torch.randint(1, 5, (), generator=g))
            ids[row, col : col + size] = torch.randint(10, 5000, (size,), generator=g)
            starts[row, col] = not (col == 0 or (row % 5 == 0 and col > 1 and ids[row, col - 1] == SEP))
            col += size
            if row % 5 == 0 and col < 20 and int(torch.randint(4, (), generator=g)) == 0:
                ids[row, col], col = SEP, col + 1
        ids[row, col] = SEP
    return ids, (ids != PAD).long(), starts


def test_whole_word_masking_selects_and_treats_each_word_as_one():
    ids, attention, starts = _word_batch()
    words = _words(ids, attention, starts)
    assert sum(len(w) > 1 for w in words) > 500
    chosen_words, classes = 0, {"mask": 0, "kept": 0, "random": 0}
    for seed in range(5):
        masked, labels = _mask(ids, attention, seed=seed, starts=starts)
        for word in words:
            chosen = {bool(labels[p] != -100) for p in word}
            assert len(chosen) == 1, f"word {word} partly selected"
            if chosen.pop():
                kinds = {"mask" if masked[p] == MASK else "kept" if masked[p] == ids[p] else "random" for p in word}
                assert len(kinds) == 1, f"word {word} mixes replacement classes {kinds}"
                chosen_words += 1
                classes[kinds.pop()] += 1
    assert abs(chosen_words / (5 * len(words)) - 0.15) < 0.015
    assert abs(classes["mask"] / chosen_words - 0.8) < 0.04
    assert abs(classes["kept"] / chosen_words - 0.1) < 0.03


def test_word_fragments_in_different_rows_are_masked_independently():
    # Row 1 is all continuations: it must not join row 0's last word.
    ids = torch.tensor([[CLS, 11, 12, 13], [14, 15, 16, SEP]])
    starts = torch.tensor([[True, True, False, False], [False, False, False, True]])
    selections = {tuple(bool(x) for x in (_mask(ids, torch.ones_like(ids), s, starts, 0.5)[1][:, 2] != -100))
                  for s in range(40)}
    assert {(True, False), (False, True)} <= selections


def _wordpiece_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing", "##ed", "the", "game", "##s", "#"]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def test_continuation_ids_on_a_wordpiece_tokenizer():
    tokenizer = _wordpiece_tokenizer()
    continuation = continuation_ids(tokenizer)
    vocab = tokenizer.get_vocab()
    assert continuation.dtype == torch.bool and len(continuation) == len(vocab)
    assert {t for t, i in vocab.items() if continuation[i]} == {"##ing", "##ed", "##s"}
    ids = torch.tensor([tokenizer("the games playing")["input_ids"]])
    assert tokenizer.convert_ids_to_tokens(ids[0]) == ["[CLS]", "the", "game", "##s", "play", "##ing", "[SEP]"]
    assert word_starts(ids, continuation).tolist() == [[True, True, True, False, True, False, True]]


@pytest.mark.parametrize("marker", ["\u0120", "\u2581"])
def test_continuation_ids_where_pieces_mark_word_starts(marker):
    # "##" is an ordinary token in byte-level vocabularies (markdown); it must not flip the rule.
    vocab = {"<s>": 0, "</s>": 1, f"{marker}hello": 2, "hello": 3, ",": 4, f"{marker}world": 5, "##": 6}
    tokenizer = SimpleNamespace(get_vocab=lambda: vocab, all_special_ids=[0, 1])
    assert continuation_ids(tokenizer).tolist() == [False, False, False, True, True, False, True]


def test_continuation_ids_refuses_a_vocabulary_without_markers():
    with pytest.raises(ValueError, match="cannot find words"):
        continuation_ids(SimpleNamespace(get_vocab=lambda: {"a": 0, "b": 1}, all_special_ids=[]))


def _contents(sequences):
    stripped = [s[1:] if s[:1] == [CLS] else s for s in sequences]
    stripped = [s[:-1] if s[-1:] == [SEP] else s for s in stripped]
    stream = []
    for s in (s for s in stripped if s):
        stream += ([SEP] if stream else []) + s
    return stream


def test_pack_blocks_exact_blocks_lose_and_duplicate_nothing():
    g = torch.Generator().manual_seed(0)
    sequences = []
    for i in range(50):
        body = torch.randint(10, 5000, (int(torch.randint(0, 40, (), generator=g)),), generator=g).tolist()
        sequences.append([CLS, *body, SEP] if i % 2 else body)  # with and without their own specials
    stream = _contents(sequences)
    blocks = pack_blocks(sequences, 32, CLS, SEP, min_last=0)
    assert all(b[0] == CLS and b[-1] == SEP for b in blocks)
    assert all(len(b) == 32 for b in blocks[:-1]) and 2 < len(blocks[-1]) <= 32
    assert [t for b in blocks for t in b[1:-1]] == stream


@pytest.mark.parametrize("tail, kept", [(7, False), (8, True)])
def test_pack_blocks_keeps_a_short_last_block_only_with_enough_content(tail, kept):
    sequences = [[CLS, *range(10, 24), SEP], [CLS, *range(30, 30 + 13 + tail), SEP]]  # 14 + 1 + 13 + tail
    blocks = pack_blocks(sequences, 16, CLS, SEP)
    assert [len(b) for b in blocks] == [16, 16] + ([tail + 2] if kept else [])
    assert [t for b in blocks for t in b[1:-1]] == _contents(sequences)[: 28 + (tail if kept else 0)]


def test_pack_blocks_skips_empty_texts_and_rejects_tiny_blocks():
    assert pack_blocks([[CLS, SEP], [], [CLS, *range(10, 20), SEP]], 12, CLS, SEP) == [[CLS, *range(10, 20), SEP]]
    with pytest.raises(ValueError):
        pack_blocks([[5, 6, 7]], 2, CLS, SEP)
