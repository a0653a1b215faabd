"""Text augmentation on token ids: seeded, special tokens kept, never an empty text, whole words."""
from typing import get_args

import numpy as np
import pytest
from pydantic import ValidationError

from mlcore.config import TrainingKnobs
from mlcore.config.knobs import TextAugmentOp
from mlcore.config.training import to_settings
from mlcore.engine.batching import Encoded
from mlcore.engine.text_augment import OPS, TokenAugment, augment_ids, augmented, words
from mlcore.models.classifier import augment_of

CLS, SEP, MASK = 1, 2, 3
# Ids 50 and up continue the word before them (as "##" pieces do).
CONTINUATION = np.arange(100) >= 50


def texts(n: int = 200, seed: int = 0) -> Encoded:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        body = []
        for _ in range(rng.integers(0, 12)):
            body += [int(rng.integers(10, 50))] + [int(t) for t in rng.integers(50, 100, rng.integers(0, 3))]
        rows.append([CLS, *body, SEP])
    return Encoded(rows, rng.integers(0, 2, n))


def aug(strength: float = 1.0, ops=OPS) -> TokenAugment:
    return TokenAugment(strength, tuple(ops), MASK, CONTINUATION)


def test_seeded_by_seed_and_epoch_alone():
    data = texts()
    once, again = augmented(data, aug(), seed=7, epoch=2), augmented(data, aug(), seed=7, epoch=2)
    assert once.input_ids == again.input_ids
    assert augmented(data, aug(), seed=7, epoch=3).input_ids != once.input_ids  # a new epoch, new draws
    assert augmented(data, aug(), seed=8, epoch=2).input_ids != once.input_ids
    assert once.input_ids != data.input_ids


def test_strength_zero_is_the_identity():
    data = texts()
    assert augmented(data, aug(0.0), 0, 1) is data
    assert augmented(data, None, 0, 1) is data


@pytest.mark.parametrize("ops", [(op,) for op in OPS] + [OPS], ids=[*OPS, "all"])
def test_special_tokens_kept_labels_untouched_never_empty(ops):
    data = texts()
    out = augmented(data, aug(1.0, ops), 0, 1)
    assert out.labels is data.labels and len(out) == len(data)
    for before, after in zip(data.input_ids, out.input_ids, strict=True):
        assert after[0] == CLS and after[-1] == SEP
        assert CLS not in after[1:-1] and SEP not in after[1:-1]
        assert len(after) >= min(len(before), 3)  # a text with words keeps at least one


def test_ops_move_and_mask_whole_words():
    data = texts()
    for op in OPS:
        out = augmented(data, aug(1.0, (op,)), 0, 1)
        for before, after in zip(data.input_ids, out.input_ids, strict=True):
            inner = after[1:-1]
            assert not inner or not CONTINUATION[inner[0]] or inner[0] == MASK  # no stranded "##" piece
            if op == "swap":
                assert sorted(map(tuple, words(inner, CONTINUATION))) == sorted(
                    map(tuple, words(before[1:-1], CONTINUATION)))
            if op == "mask":
                assert len(after) == len(before)
                assert all(a in (b, MASK) for a, b in zip(after, before, strict=True))


def test_strength_scales_how_much_changes():
    data = texts(500)

    def changed_share(strength):
        out = augmented(data, aug(strength, ("mask",)), 0, 1)
        n = sum(len(ids) - 2 for ids in data.input_ids)
        return sum(a != b for x, y in zip(out.input_ids, data.input_ids, strict=True)
                   for a, b in zip(x, y, strict=True)) / n

    assert 0 < changed_share(0.25) < changed_share(1.0) < 0.3


def test_without_continuation_pieces_every_token_is_a_word():
    assert words([5, 60, 7], None) == [[5], [60], [7]]
    assert words([5, 60, 7], CONTINUATION) == [[5, 60], [7]]
    assert augment_ids([CLS, SEP], aug(), np.random.default_rng(0)) == [CLS, SEP]


def test_the_knob_offers_exactly_the_engines_ops():
    assert set(get_args(TextAugmentOp)) == set(OPS)


def test_bad_strength_or_op_is_refused():
    with pytest.raises(ValueError, match="strength"):
        aug(1.5)
    with pytest.raises(ValueError, match="unknown text augmentation ops"):
        aug(0.5, ("shuffle",))
    with pytest.raises(ValidationError, match="augment_text_ops"):
        TrainingKnobs(augment_text_ops=["shuffle"])


def test_knobs_build_the_augmentation_with_the_tokenizers_mask(tiny_tokenizer):
    base = dict(epochs=1, batch_size=8, learning_rate=1e-3)
    assert augment_of(to_settings(**base), tiny_tokenizer) is None  # auto: off for text
    assert augment_of(to_settings(**base, augment=0), tiny_tokenizer) is None
    a = augment_of(to_settings(**base, augment=0.5, augment_text_ops=["swap", "mask"]), tiny_tokenizer)
    assert a.strength == 0.5 and a.ops == ("swap", "mask") and a.mask_id == tiny_tokenizer.mask_token_id
    assert a.continuation[tiny_tokenizer.convert_tokens_to_ids("[CLS]")] == 0
