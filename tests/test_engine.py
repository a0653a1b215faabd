"""Each training option of params.yaml, shown by its effect on a tiny 2-layer BERT."""
import pytest
import torch

from mlcore.config.training import to_settings
from mlcore.engine import checkpointing, layers
from mlcore.engine.batching import encode
from mlcore.errors import UserError
from mlcore.models import modeling
from mlcore.models.classifier import ClassifierLoss, augment_of, balanced_class_weights, train_classifier
from tests.conftest import make_reviews

CPU = torch.device("cpu")
TEXT_AUGMENT = {"augment": 1.0, "augment_text_ops": ["dropout", "span", "swap", "mask"]}  # every op, at full strength


@pytest.fixture(scope="module")
def tok(tiny_tokenizer):
    return tiny_tokenizer


@pytest.fixture(scope="module")
def base_dir(tiny_base_dir):
    """conftest's seeded 2-layer TINY_BERT, saved once for the session."""
    return tiny_base_dir


@pytest.fixture(scope="module")
def data(tok):
    df = make_reviews(n=160, n_plots=0)
    y = (df["category"] == "rotten").astype(int).tolist()
    return encode(tok, df["text"][:128], 32, y[:128]), encode(tok, df["text"][128:], 32, y[128:])


def fresh(base_dir):
    torch.manual_seed(1)
    return modeling.load_classifier(base_dir, {"fresh": 0, "rotten": 1})[0]


def train(base_dir, tok, data, on_epoch=None, checkpoint_dir=None, **kw):
    model = fresh(base_dir)
    s = to_settings(**({"epochs": 1, "batch_size": 16, "learning_rate": 1e-2, "seed": 0} | kw))
    result = train_classifier(model, *data, s, CPU, tok.pad_token_id, on_epoch, checkpoint_dir,
                              augment=augment_of(s, tok))
    return model, result


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before, model, prefix):
    after = model.state_dict()
    keys = [k for k in before if k.startswith(prefix) and before[k].is_floating_point()]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


@pytest.mark.parametrize("strategy,frozen,trained", [
    ("full", [], ["bert.embeddings.", "bert.encoder.layer.0.", "classifier."]),
    ("freeze_embeddings", ["bert.embeddings."], ["bert.encoder.layer.0.", "classifier."]),
    ("head_only", ["bert.embeddings.", "bert.encoder.", "bert.pooler.x"][:2], ["classifier.", "bert.pooler."]),
])
def test_strategies_freeze_exactly_their_weights(strategy, frozen, trained, base_dir, tok, data):
    before = snapshot(fresh(base_dir))
    model, _ = train(base_dir, tok, data, strategy=strategy, weight_decay=0.1)
    for prefix in frozen:
        assert not changed(before, model, prefix), f"{prefix} moved under {strategy}"
    for prefix in trained:
        assert changed(before, model, prefix), f"{prefix} did not train under {strategy}"


def test_freeze_bottom_layers(base_dir, tok, data):
    before = snapshot(fresh(base_dir))
    model, _ = train(base_dir, tok, data, strategy="freeze_bottom", freeze_layers=1)
    assert not changed(before, model, "bert.embeddings.") and not changed(before, model, "bert.encoder.layer.0.")
    assert changed(before, model, "bert.encoder.layer.1.")


def test_gradual_unfreezing_thaws_one_layer_per_epoch_from_the_top(base_dir, tok, data):
    model = fresh(base_dir)
    states = [snapshot(model)]
    s = to_settings(epochs=4, batch_size=16, learning_rate=1e-2, seed=0, strategy="gradual_unfreeze")
    train_classifier(model, *data, s, CPU, tok.pad_token_id, on_epoch=lambda e: states.append(snapshot(model)))

    def moved(epoch, prefix):
        return any(not torch.equal(states[epoch - 1][k], states[epoch][k]) for k in states[0] if k.startswith(prefix))

    assert moved(1, "classifier.") and not moved(1, "bert.encoder.layer.1.")
    assert moved(2, "bert.encoder.layer.1.") and not moved(2, "bert.encoder.layer.0.")
    assert moved(3, "bert.encoder.layer.0.") and not moved(3, "bert.embeddings.")
    assert moved(4, "bert.embeddings.")


def test_trainable_from_matches_the_strategy_table():
    assert layers.trainable_from("full", 6) == 0
    assert layers.trainable_from("freeze_embeddings", 6) == 1
    assert layers.trainable_from("freeze_bottom", 6, freeze_layers=4) == 5
    assert layers.trainable_from("head_only", 6) == 7
    assert [layers.trainable_from("gradual_unfreeze", 6, epoch=e, per_epoch=2) for e in (1, 2, 4, 5)] == [7, 5, 1, 0]


def test_dropout_override_reaches_every_dropout(base_dir, tok, data):
    model, _ = train(base_dir, tok, data, dropout=0.0)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert model.config.hidden_dropout_prob == 0.0
    model.train()
    batch = {"input_ids": torch.tensor([data[0].input_ids[0]])}
    assert torch.equal(model(**batch).logits, model(**batch).logits)  # no dropout noise in train mode
    layers.override_dropout(model, 0.5)
    assert not torch.equal(model(**batch).logits, model(**batch).logits)


class FixedLogits(torch.nn.Module):
    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": torch.tensor([[4.0, -4.0], [1.0, 0.0]])})


def test_label_smoothing_follows_its_formula():
    labels = torch.tensor([0, 1])
    logp = torch.log_softmax(torch.tensor([[4.0, -4.0], [1.0, 0.0]]), 1)
    nll, uniform = -logp[[0, 1], labels], -logp.mean(1)
    expected = ((1 - 0.2) * nll + 0.2 * uniform).mean()
    assert torch.isclose(ClassifierLoss(FixedLogits(), None, 0.2)(None, None, labels), expected)
    assert not torch.isclose(ClassifierLoss(FixedLogits(), None, 0.0)(None, None, labels), expected)


def test_class_weights_weight_the_loss():
    labels = torch.tensor([0, 1])
    weights = torch.tensor([1.0, 3.0])
    logp = torch.log_softmax(torch.tensor([[4.0, -4.0], [1.0, 0.0]]), 1)
    expected = -(logp[0, 0] * 1.0 + logp[1, 1] * 3.0) / 4.0
    assert torch.isclose(ClassifierLoss(FixedLogits(), weights, 0.0)(None, None, labels), expected)


def test_balanced_class_weights():
    w = balanced_class_weights(torch.tensor([0, 0, 0, 1]).numpy(), 3)
    assert w.tolist() == pytest.approx([4 / 6, 4 / 2, 1.0])


def test_gradient_clipping_bounds_the_update(base_dir, tok, data):
    before = snapshot(fresh(base_dir))
    model, _ = train(base_dir, tok, (type(data[0])(data[0].input_ids[:16], data[0].labels[:16]), data[1]),
                     optimizer="sgd", learning_rate=1.0, max_grad_norm=1e-3, warmup=0, schedule="constant",
                     weight_decay=0.0)
    after = model.state_dict()
    delta = torch.sqrt(sum(((after[k] - v) ** 2).sum() for k, v in before.items() if v.is_floating_point()))
    assert 0 < delta <= 1e-3 * 1.01


def test_gradient_accumulation_matches_the_large_batch(base_dir, tok, data):
    # fp32: the sums must match to 1e-4 (bf16 autocast, auto on a CPU with native bf16, rounds to ~1e-2)
    common = dict(optimizer="sgd", learning_rate=0.5, warmup=0, schedule="constant", dropout=0.0,
                  length_grouping=False, weight_decay=0.0, epochs=2, precision="fp32")
    big, _ = train(base_dir, tok, data, batch_size=32, **common)
    small, _ = train(base_dir, tok, data, batch_size=8, grad_accumulation=4, **common)
    unaccumulated, _ = train(base_dir, tok, data, batch_size=8, **common)
    diff = max((big.state_dict()[k] - small.state_dict()[k]).abs().max() for k in big.state_dict())
    other = max((big.state_dict()[k] - unaccumulated.state_dict()[k]).abs().max() for k in big.state_dict())
    assert diff < 1e-4 < other


def test_seeded_runs_are_identical(base_dir, tok, data):
    a, ra = train(base_dir, tok, data, epochs=2)
    b, rb = train(base_dir, tok, data, epochs=2)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert ra.history[-1]["train_loss"] == rb.history[-1]["train_loss"]


class Crash(RuntimeError):
    pass


def test_resume_continues_from_the_saved_epoch(base_dir, tok, data, tmp_path):
    full, full_result = train(base_dir, tok, data, epochs=3)

    def crash_after_two(e):
        if e["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        train(base_dir, tok, data, on_epoch=crash_after_two, checkpoint_dir=tmp_path / "ckpt", epochs=3)
    saved = checkpointing.peek(tmp_path / "ckpt")
    assert saved.epoch == 2 and saved.step == 2 * 8
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "best.safetensors", "model.safetensors", "optimizer.safetensors", "state.json"]  # no pickle
    resumed, result = train(base_dir, tok, data, checkpoint_dir=tmp_path / "ckpt", epochs=3)
    assert result.resumed_from_epoch == 2 and [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.best_score == full_result.best_score
    assert all(torch.equal(full.state_dict()[k], resumed.state_dict()[k]) for k in full.state_dict())
    # other settings: a fresh start, not a resume of someone else's run
    _, other = train(base_dir, tok, data, checkpoint_dir=tmp_path / "ckpt", epochs=3, learning_rate=5e-3)
    assert other.resumed_from_epoch == 0


def test_eval_every_steps_adds_mid_epoch_evaluations_without_changing_training(base_dir, tok, data):
    _, per_epoch = train(base_dir, tok, data, epochs=2)
    _, stepped = train(base_dir, tok, data, epochs=2, eval_every_steps=3)  # 8 steps per epoch
    assert [h["step"] for h in stepped.history] == [3, 6, 8, 9, 12, 15, 16]
    assert [h["epoch"] for h in stepped.history] == [0.375, 0.75, 1, 1.125, 1.5, 1.875, 2]
    assert [h["evaluation"] for h in stepped.history] == list(range(1, 8))
    ends = [h for h in stepped.history if h["epoch"] in (1, 2)]
    for mine, theirs in zip(ends, per_epoch.history, strict=True):  # evaluating mid-epoch does not perturb training
        assert mine["val_macro_f1"] == theirs["val_macro_f1"] and mine["train_loss"] == theirs["train_loss"]

    class Pruned(Exception):
        pass

    def prune_at_second(e):
        if e["evaluation"] == 2:
            raise Pruned

    with pytest.raises(Pruned):  # a search prunes inside the first epoch
        train(base_dir, tok, data, epochs=2, eval_every_steps=3, on_epoch=prune_at_second)


@pytest.mark.parametrize("knobs", [{}, TEXT_AUGMENT], ids=["plain", "text-augment"])
def test_dataloader_workers_give_the_same_run(base_dir, tok, data, knobs):
    a, _ = train(base_dir, tok, data, **knobs)
    b, _ = train(base_dir, tok, data, num_workers=1, **knobs)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_text_augmentation_changes_training_and_off_changes_nothing(base_dir, tok, data):
    plain, plain_result = train(base_dir, tok, data, epochs=2)
    off, _ = train(base_dir, tok, data, epochs=2, augment=0.0)
    on, on_result = train(base_dir, tok, data, epochs=2, **TEXT_AUGMENT)
    assert all(torch.equal(plain.state_dict()[k], off.state_dict()[k]) for k in plain.state_dict())
    assert any(not torch.equal(plain.state_dict()[k], on.state_dict()[k]) for k in plain.state_dict())
    assert on_result.history[-1]["train_loss"] != plain_result.history[-1]["train_loss"]


def test_bf16_autocast_on_cpu_trains(base_dir, tok, data):
    _, result = train(base_dir, tok, data, precision="bf16", epochs=2)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)


def test_bf16_weights_train_in_bf16_and_return_the_fp32_masters(base_dir, tok, data):
    model = fresh(base_dir)
    before, seen = snapshot(model), []
    # updates of ~1e-7 of a weight: bf16 weights alone (8 mantissa bits) would round every one away
    s = to_settings(epochs=1, batch_size=16, learning_rate=1e-6, seed=0, precision="bf16-weights", optimizer="sgd",
                    warmup=0, schedule="constant", weight_decay=0.0, strategy="freeze_embeddings")
    result = train_classifier(model, *data, s, CPU, tok.pad_token_id,
                              on_epoch=lambda e: seen.append(next(model.parameters()).dtype))
    assert seen == [torch.bfloat16]  # the model trained in bf16 itself
    after = model.state_dict()
    assert all(v.dtype == before[k].dtype for k, v in after.items())  # and comes back in fp32
    moved = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert moved and not any(k.startswith("bert.embeddings.") for k in moved)  # frozen: bit for bit
    weights = [k for k in moved if before[k].abs().min() > 0]
    assert weights and all(((after[k] - before[k]).abs() < before[k].abs() * 2 ** -9).all() for k in weights)
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))


def test_lora_trains_adapters_and_returns_a_plain_merged_model(base_dir, tok, data):
    model = fresh(base_dir)
    before, trainable = snapshot(model), []
    s = to_settings(epochs=1, batch_size=16, learning_rate=1e-2, seed=0, strategy="lora", lora_rank=4)
    train_classifier(model, *data, s, CPU, tok.pad_token_id, on_epoch=lambda e: trainable.append(
        (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))))
    (n_trainable, n_all), = trainable
    assert n_trainable < 0.2 * n_all  # the tiny BERT's head is a large share; MiniLM's is 0.3% (docs)
    after = model.state_dict()
    assert after.keys() == before.keys()  # merged and unloaded: the plain architecture, nothing of peft left
    assert not any("lora" in type(m).__name__.lower() for m in model.modules())
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(".query.weight" in k for k in moved) and any(".value.weight" in k for k in moved)
    head = ("classifier.", "bert.pooler.")  # the top depth trains in full
    assert all(k.endswith((".query.weight", ".value.weight")) or k.startswith(head) for k in moved), moved


def test_lora_merging_keeps_the_adapted_function(base_dir):
    from mlcore.engine import lora

    model = fresh(base_dir).eval()
    lora.add_adapters(model, rank=4, alpha=8, dropout=0.0, targets=["query", "value"])
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # B starts at zero: make the adapters do something
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        assert lora.merge_adapters(model) == 4  # two layers x two targets
        merged = model(input_ids=ids).logits
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="lora_targets"):
        lora.add_adapters(fresh(base_dir), rank=4, alpha=8, dropout=0.0, targets=["conv_stem"])


@pytest.mark.parametrize("knobs", [{"precision": "bf16-weights"}, {"strategy": "lora"}, TEXT_AUGMENT],
                         ids=["bf16-weights", "lora", "text-augment"])
def test_resumes_exactly_with_master_weights_and_adapters(base_dir, tok, data, tmp_path, knobs):
    # the checkpoint holds the fp32 masters (not the bf16 weights), and the adapters unmerged;
    # augmented epochs are rebuilt from (seed, epoch) alone
    common = dict(knobs, epochs=3)
    full, full_result = train(base_dir, tok, data, **common)

    def crash_after_two(e):
        if e["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        train(base_dir, tok, data, on_epoch=crash_after_two, checkpoint_dir=tmp_path / "ckpt", **common)
    resumed, result = train(base_dir, tok, data, checkpoint_dir=tmp_path / "ckpt", **common)
    assert result.resumed_from_epoch == 2 and result.best_score == full_result.best_score
    assert all(torch.equal(full.state_dict()[k], resumed.state_dict()[k]) for k in full.state_dict())


@pytest.mark.slow  # compiling takes seconds
def test_torch_compile_trains_the_same_model(base_dir, tok, data):
    # fp32: compiled and eager kernels round differently, far beyond 1e-3 in bf16 (auto on a CPU with it)
    plain, _ = train(base_dir, tok, data, dropout=0.0, precision="fp32")
    compiled, result = train(base_dir, tok, data, dropout=0.0, compile=True, precision="fp32")
    assert result.history[0]["train_loss"] > 0
    diff = max((plain.state_dict()[k] - compiled.state_dict()[k]).abs().max() for k in plain.state_dict())
    assert diff < 1e-3  # same computation, other kernels: equal up to float rounding


def test_length_grouping_cuts_padding(tok):
    import numpy as np

    from mlcore.engine.batching import Encoded, epoch_order

    rng = np.random.default_rng(0)
    data = Encoded([[1] * int(n) for n in rng.integers(3, 60, size=2000)])

    def padded(grouping):
        s = to_settings(epochs=1, batch_size=32, learning_rate=1e-3, length_grouping=grouping)
        order = epoch_order(data, s, epoch=1)
        assert sorted(order) == list(range(2000))  # every row once
        return sum(32 * max(len(data.input_ids[i]) for i in order[k:k + 32]) for k in range(0, 2000, 32))

    assert padded(True) < 0.6 * padded(False)


def test_precision_choice_per_device():
    from mlcore.engine import precision

    assert precision.resolve("auto", CPU, cpu_flags="fpu sse2 avx2 avx512f") == "fp32"
    assert precision.resolve("auto", CPU, cpu_flags="fpu avx512f avx512_bf16") == "bf16"
    assert precision.resolve("auto", CPU, cpu_flags="fpu amx_tile amx_bf16") == "bf16"
    assert precision.resolve("auto", CPU, cpu_flags="") == "fp32"  # no flags known (macOS, Windows): fp32
    assert precision.resolve("auto", CPU) in ("fp32", "bf16")  # this machine's own flags
    assert precision.resolve("fp32", CPU, cpu_flags="avx512_bf16") == "fp32"  # a set precision is kept
    assert precision.resolve("bf16", CPU) == "bf16"
    assert precision.grad_scaler("fp16", CPU).is_enabled()
    assert not precision.grad_scaler("bf16", CPU).is_enabled()


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    from mlcore.engine import precision

    assert precision.cpu_bf16_flags("fpu avx512_bf16 sse amx_bf16") == ["avx512_bf16", "amx_bf16"]
    assert precision.cpu_bf16_flags("fpu avx512_bf16x") == []  # whole flags only
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx512_bf16\n")
    assert precision.cpu_bf16_flags(precision.read_cpu_flags(str(info))) == ["avx512_bf16"]
    assert precision.read_cpu_flags(str(tmp_path / "missing")) == ""


def test_numerics_records_what_decides_the_bits():
    from mlcore.engine import precision
    from mlcore.tracking.model_card import describe_numerics

    info = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\n"
    record = precision.numerics(CPU, "bf16", info)
    assert record == {"device": "cpu", "precision": "bf16", "cpu": "AMD EPYC 9R14", "cpu_bf16_flags": "avx512_bf16",
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__}
    assert describe_numerics(record) == (
        f"bf16 on cpu: AMD EPYC 9R14 (native bf16: avx512_bf16), torch {torch.__version__} "
        f"(CPU capability {record['cpu_capability']}), {record['threads']} threads")
    bare = precision.numerics(CPU, "fp32", "")  # no /proc/cpuinfo (macOS, Windows)
    assert bare["cpu_bf16_flags"] == "none" and bare["cpu"]
    assert precision.numerics(CPU, "fp32")["cpu"]  # this machine's own


def test_a_diverging_run_stops_with_a_clear_error(base_dir, tok, data):
    """The loss stays on the device between readings (no wait per step), yet a run whose
    loss stops being finite still ends with FloatingPointError, which a search trial turns
    into a failed trial and a stage into a message."""
    with pytest.raises(FloatingPointError, match="learning rate 1e\\+30 too high"):
        train(base_dir, tok, data, optimizer="sgd", learning_rate=1e30, max_grad_norm=0.0, warmup=0.0)
