import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from mlcore.config import ALL_OPTIMIZERS
from mlcore.engine.optim import make_optimizer, param_groups
from mlcore.engine.schedules import lr_factor, make_scheduler, warmup_steps


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3,
                                                    num_attention_heads=2, intermediate_size=32, num_labels=2))


@pytest.mark.parametrize("name", ALL_OPTIMIZERS)
def test_every_optimizer_steps(name, model):
    before = model.classifier.weight.detach().clone()
    opt = make_optimizer(name, model, 1e-2, weight_decay=0.01)
    model.zero_grad()
    model(input_ids=torch.tensor([[2, 10, 11, 3]]), labels=torch.tensor([1])).loss.backward()
    opt.step()
    assert not torch.equal(before, model.classifier.weight)
    with torch.no_grad():
        model.classifier.weight.copy_(before)


def test_optimizer_variants_and_fast_kernels(model):
    nesterov = make_optimizer("sgd_nesterov", model, 0.1, momentum=0.8)
    assert nesterov.defaults["nesterov"] and nesterov.defaults["momentum"] == 0.8
    assert make_optimizer("sgd_momentum", model, 0.1).defaults["momentum"] == 0.9
    assert make_optimizer("sgd", model, 0.1).defaults["momentum"] == 0
    assert make_optimizer("adamw", model, 0.1).defaults["fused"]  # fused kernel where torch has one
    assert make_optimizer("rmsprop", model, 0.1).defaults["foreach"]  # multi-tensor path otherwise


def test_no_weight_decay_on_bias_and_layernorm(model):
    names = {id(p): n for n, p in model.named_parameters()}
    for group in param_groups(model, 1e-3, 0.1):
        for p in group["params"]:
            no_decay = names[id(p)].endswith(("bias", "LayerNorm.weight"))
            assert group["weight_decay"] == (0.0 if no_decay else 0.1)


def test_layerwise_lr_decay_scales_by_depth(model):
    groups = param_groups(model, 1.0, 0.0, layerwise_lr_decay=0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    lr_of = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    assert lr_of["classifier.weight"] == 1.0  # top (depth 4 of 3 layers + embeddings)
    assert lr_of["bert.encoder.layer.2.output.dense.weight"] == 0.5
    assert lr_of["bert.encoder.layer.0.output.dense.weight"] == 0.125
    assert lr_of["bert.embeddings.word_embeddings.weight"] == 0.0625


def run_schedule(schedule, total=100, warmup=10, per_epoch=20, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = make_scheduler(opt, schedule=schedule, total_steps=total, warmup=warmup, steps_per_epoch=per_epoch, **kw)
    lrs = []
    for _ in range(total):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("schedule,formula", [
    ("constant", lambda t: 1.0),
    ("linear", lambda t: 1 - t / 90),
    ("cosine", lambda t: 0.5 * (1 + math.cos(math.pi * t / 90))),
    ("exponential", lambda t: 0.5 ** (t / 20)),
    ("step", lambda t: 0.5 ** (t // 20)),
])
def test_schedule_follows_its_formula_after_warmup(schedule, formula):
    lrs = run_schedule(schedule, gamma=0.5, step_epochs=1.0)
    assert lrs[:10] == pytest.approx([2.0 * (s + 1) / 10 for s in range(10)])  # linear warmup
    for step in range(10, 100):
        assert lrs[step] == pytest.approx(2.0 * formula(step - 10)), (schedule, step)


def test_step_decay_every_two_epochs():
    lrs = run_schedule("step", warmup=0, gamma=0.1, step_epochs=2.0)
    assert lrs[39] == pytest.approx(2.0) and lrs[40] == pytest.approx(0.2) and lrs[80] == pytest.approx(0.02)


def test_warmup_as_fraction_or_steps():
    assert warmup_steps(0.1, 200) == 20
    assert warmup_steps(15, 200) == 15
    assert warmup_steps(0, 200) == 0
    assert lr_factor(0, schedule="constant", total_steps=10, warmup=0, steps_per_epoch=5) == 1.0
