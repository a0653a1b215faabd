import math

import numpy as np
import pytest
import torch

from mlcore import modeling
from mlcore.batching import by_length, collate, encode
from mlcore.config import ALL_OPTIMIZERS, PretrainConfig
from mlcore.optim import linear_warmup_decay, make_optimizer, param_groups
from mlcore.pretraining import mask_tokens, pretrain_mlm
from mlcore.tokenization import train_wordpiece
from mlcore.training import TrainSettings, train_classifier
from tests.conftest import make_reviews

TINY = PretrainConfig(vocab_size=200, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_length=32)


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(make_reviews(n=300)["text"], vocab_size=200, max_length=32)


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


def test_dynamic_padding_pads_to_longest_in_batch():
    batch = collate([[1, 2], [1, 2, 3, 4]], pad_id=0)
    assert batch["input_ids"].shape == (2, 4)
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_mask_tokens_rates_and_specials():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (200, 50))
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones_like(ids)
    mask[:, 40:] = 0
    masked, labels = mask_tokens(ids, mask, [0, 1, 2, 3, 4], 4, 100, 0.15, gen)
    chosen = labels != -100
    real = (mask.bool() & (ids > 4)).sum().item()
    assert abs(chosen.sum().item() / real - 0.15) < 0.02
    assert not chosen[:, 0].any() and not chosen[:, 40:].any()  # specials and padding never masked
    as_mask = (masked == 4) & chosen
    kept = (masked == ids) & chosen
    assert abs(as_mask.sum().item() / chosen.sum().item() - 0.8) < 0.05
    assert 0.05 < kept.sum().item() / chosen.sum().item() < 0.17  # 10% kept + random hits on itself
    assert torch.equal(labels[chosen], ids[chosen])


def test_mlm_pretraining_lowers_validation_loss(tokenizer):
    texts = make_reviews(n=300)["text"].tolist()
    model = modeling.new_mlm_model(TINY, len(tokenizer), tokenizer.pad_token_id)
    train, val = encode(tokenizer, texts[:250], 32), encode(tokenizer, texts[250:], 32)
    history = pretrain_mlm(model, tokenizer, train, val, epochs=4, batch_size=16, lr=3e-3, probability=0.15,
                           seed=0, device=torch.device("cpu"))
    assert history[-1].val_loss < history[0].val_loss
    assert history[-1].val_perplexity == pytest.approx(math.exp(history[-1].val_loss))


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
    s = TrainSettings(epochs=4, batch_size=16, learning_rate=5e-3, optimizer="adamw", seed=0)
    result = train_classifier(model, train, val, s, torch.device("cpu"), tokenizer.pad_token_id, seen.append)
    assert len(seen) == 4 and seen[-1].train_loss < seen[0].train_loss
    assert result.best_val_macro_f1 > 0.8
    assert result.best_val_macro_f1 == max(e.val_macro_f1 for e in result.history)
    assert result.history[result.best_epoch - 1].val_macro_f1 == result.best_val_macro_f1


def test_early_stopping_stops_when_validation_stalls(tokenizer, tmp_path):
    train, val = _splits(tokenizer)
    model = _classifier(tokenizer, tmp_path)
    s = TrainSettings(epochs=10, batch_size=16, learning_rate=1e-9, optimizer="sgd", seed=0, patience=2, min_delta=0.01)
    result = train_classifier(model, train, val, s, torch.device("cpu"), tokenizer.pad_token_id)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


@pytest.mark.parametrize("name", ALL_OPTIMIZERS)
def test_every_optimizer_steps(name, tokenizer, tmp_path):
    model = _classifier(tokenizer, tmp_path)
    before = model.classifier.weight.detach().clone()
    opt = make_optimizer(name, model, 1e-2, weight_decay=0.01)
    out = model(**collate([[2, 10, 11, 3]], 0), labels=torch.tensor([1]))
    out.loss.backward()
    opt.step()
    assert not torch.equal(before, model.classifier.weight)


def test_no_weight_decay_on_bias_and_layernorm(tokenizer, tmp_path):
    model = _classifier(tokenizer, tmp_path)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith(("bias", "LayerNorm.weight")) for p in no_decay["params"])
    assert not any(names[id(p)].endswith("bias") for p in decay["params"])


def test_schedule_warms_up_then_decays_linearly():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_warmup_decay(opt, total_steps=100, warmup_fraction=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx((100 - 55) / 90)


def test_length_order_sorts_by_length(tokenizer):
    enc = encode(tokenizer, ["a b c d e", "a", "a b"], 32)
    assert list(by_length(enc)) == [1, 2, 0]
    assert np.all(np.diff([len(enc.input_ids[i]) for i in by_length(enc)]) >= 0)
