import math

import numpy as np
import pytest
import torch

from mlcore.config import PretrainConfig
from mlcore.config.training import to_settings
from mlcore.engine.batching import by_length, collate, encode
from mlcore.models import modeling
from mlcore.models.classifier import train_classifier
from mlcore.models.mlm import MlmBatcher, pack, pretrain_mlm
from tests.conftest import make_reviews

TINY = PretrainConfig(init_from=None, vocab_size=200, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                      max_length=32)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    return tiny_tokenizer


def test_wordpiece_tokenizer_round_trip(tokenizer, tmp_path):
    ids = tokenizer("the film was great")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the film was great"
    assert len(tokenizer) <= 200
    model = modeling.new_mlm_model(TINY, len(tokenizer), tokenizer.pad_token_id)
    modeling.save(model, tokenizer, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert not list((tmp_path / "ckpt").glob("*.bin"))
    again, tok2 = modeling.load_mlm_model(tmp_path / "ckpt")
    assert tok2("the film was great")["input_ids"] == ids
    assert again.config._attn_implementation == "sdpa"


def test_dynamic_padding_pads_to_longest_in_batch():
    batch = collate([[1, 2], [1, 2, 3, 4]], pad_id=0)
    assert batch["input_ids"].shape == (2, 4)
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def _mlm_data(tokenizer):
    texts = make_reviews(n=300)["text"].tolist()
    return encode(tokenizer, texts[:250], 32), encode(tokenizer, texts[250:], 32)


def test_mlm_pretraining_lowers_validation_loss(tokenizer):
    model = modeling.new_mlm_model(TINY, len(tokenizer), tokenizer.pad_token_id)
    train, val = _mlm_data(tokenizer)
    s = to_settings(epochs=4, batch_size=16, learning_rate=3e-3, seed=0, warmup=0.06)
    result = pretrain_mlm(model, tokenizer, train, val, s, probability=0.15, device=CPU)
    history = result.history
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert history[-1]["val_perplexity"] == pytest.approx(math.exp(history[-1]["val_loss"]))


def test_packing_fills_every_block_and_trains(tokenizer):
    train, val = _mlm_data(tokenizer)
    packed = pack(train, tokenizer, 32)
    assert all(len(b) == 32 for b in packed.input_ids[:-1])
    assert all(b[0] == tokenizer.cls_token_id and b[-1] == tokenizer.sep_token_id for b in packed.input_ids)
    assert len(packed) < len(train) / 2  # short reviews: several per block
    model = modeling.new_mlm_model(TINY, len(tokenizer), tokenizer.pad_token_id)
    s = to_settings(epochs=1, batch_size=8, learning_rate=3e-3, seed=0)
    result = pretrain_mlm(model, tokenizer, packed, val, s, probability=0.15, device=CPU, whole_word=True)
    assert math.isfinite(result.history[0]["val_loss"])


def test_whole_word_masking_masks_every_piece_of_a_word(tokenizer):
    texts = ["unbelievably extraordinary screenwriting"] * 64
    enc = encode(tokenizer, texts, 32)
    pieces = tokenizer.convert_ids_to_tokens(enc.input_ids[0])
    assert any(p.startswith("##") for p in pieces)  # the test needs split words
    batch = next(MlmBatcher(tokenizer, 0.3, whole_word=True)(enc, 64, np.arange(64), torch.Generator().manual_seed(0)))
    chosen = batch["labels"] != -100
    cont = torch.tensor([p.startswith("##") for p in pieces])
    for row in chosen:
        for i in range(1, len(pieces)):
            if cont[i]:
                assert row[i] == row[i - 1]  # a continuation shares its word's choice


def _classifier(tokenizer, tmp_path):
    model = modeling.new_mlm_model(TINY, len(tokenizer), tokenizer.pad_token_id)
    modeling.save(model, tokenizer, tmp_path / "base")
    return modeling.load_classifier(tmp_path / "base", {"fresh": 0, "rotten": 1})[0]


def _splits(tokenizer):
    df = make_reviews(n=300, n_plots=0)
    y = (df["category"] == "rotten").astype(int).tolist()
    return encode(tokenizer, df["text"][:240], 32, y[:240]), encode(tokenizer, df["text"][240:], 32, y[240:])


def test_finetuning_beats_chance_and_keeps_best_epoch(tokenizer, tmp_path):
    train, val = _splits(tokenizer)
    model = _classifier(tokenizer, tmp_path)
    seen = []
    s = to_settings(epochs=4, batch_size=16, learning_rate=5e-3, optimizer="adamw", seed=0)
    result = train_classifier(model, train, val, s, CPU, tokenizer.pad_token_id, seen.append)
    assert len(seen) == 4 and seen[-1]["train_loss"] < seen[0]["train_loss"]
    assert result.best_score > 0.8
    assert result.best_score == max(e["val_macro_f1"] for e in result.history)
    assert result.history[result.best_epoch - 1]["val_macro_f1"] == result.best_score
    assert {"learning_rate", "samples_per_s", "val_accuracy"} <= set(seen[0])


def test_early_stopping_stops_when_validation_stalls(tokenizer, tmp_path):
    train, val = _splits(tokenizer)
    model = _classifier(tokenizer, tmp_path)
    s = to_settings(epochs=10, batch_size=16, learning_rate=1e-9, optimizer="sgd", seed=0, patience=2, min_delta=0.01)
    result = train_classifier(model, train, val, s, CPU, tokenizer.pad_token_id)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


def test_length_order_sorts_by_length(tokenizer):
    enc = encode(tokenizer, ["a b c d e", "a", "a b"], 32)
    assert list(by_length(enc)) == [1, 2, 0]
    assert np.all(np.diff([len(enc.input_ids[i]) for i in by_length(enc)]) >= 0)


def test_max_length_auto_is_a_capped_percentile_and_an_integer_is_kept():
    from mlcore.engine.batching import resolve_max_length

    lengths = list(range(1, 101))  # 1..100 tokens
    auto = resolve_max_length("auto", lengths, limit=512, percentile=99)
    assert auto.max_length == 100 and auto.truncated_pct == 0  # ceil(99.01)
    assert resolve_max_length("auto", lengths, limit=512, percentile=90).max_length == 91
    capped = resolve_max_length("auto", lengths, limit=64)
    assert capped.max_length == 64 and capped.truncated_pct == pytest.approx(36.0)
    assert resolve_max_length("auto", [3, 4, 5], limit=None).max_length == 8  # never below 8
    fixed = resolve_max_length(32, lengths, limit=16)  # an integer is kept as it is, even above the limit
    assert fixed.max_length == 32 and fixed.truncated_pct == pytest.approx(68.0)
    assert fixed.report() == {"max_length": 32, "max_length_setting": 32, "truncated_pct": 68.0}
    with pytest.raises(ValueError):
        resolve_max_length("longest", lengths, limit=None)


def test_max_length_limit_and_lengths_come_from_the_tokenizer_and_config(tokenizer):
    from types import SimpleNamespace

    from mlcore.engine.batching import choose_max_length, length_limit, token_lengths

    assert length_limit(tokenizer) == 32  # trained with model_max_length=32
    assert length_limit(tokenizer, SimpleNamespace(max_position_embeddings=24)) == 24
    assert length_limit(SimpleNamespace(model_max_length=int(1e30))) is None  # HF's "no limit" sentinel
    texts = ["the film was great", "a long " + "very " * 60 + "long review"]
    lengths = token_lengths(tokenizer, texts)
    assert lengths[0] == len(tokenizer(texts[0])["input_ids"]) and lengths[1] > 60  # untruncated
    choice = choose_max_length("auto", tokenizer, texts)
    assert choice.max_length == 32 and choice.truncated_pct == 50.0 and choice.limit == 32
