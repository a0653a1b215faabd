"""The distill stage: the student cut from the teacher's layers, the loss, the candidate rule, and
the stage itself, off (a note, nothing trained) and on (trained, scored, registered, resumable)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from mlcore.config import load_config
from mlcore.engine.batching import Encoded
from mlcore.errors import UserError
from mlcore.models import distillation
from mlcore.models.distillation import IGNORE, DistillLoss, choose_candidate, kept_layers, make_student
from tasks import _paths as P
from tasks._context import stage_context


def _bert(layers: int = 4, labels: int = 3) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=labels,
                        attn_implementation="sdpa")
    return BertForSequenceClassification(config).eval()


@pytest.mark.parametrize("how, teacher, student, expected", [
    ("alternate", 12, None, [0, 2, 4, 6, 8, 10]),  # DistilBERT's
    ("alternate", 6, None, [0, 2, 4]),
    ("alternate", 6, 2, [0, 3]),
    ("bottom", 6, 2, [0, 1]),
    ("same", 6, None, [0, 1, 2, 3, 4, 5]),
    ("alternate", 1, None, [0]),
])
def test_kept_layers(how, teacher, student, expected):
    assert kept_layers(how, teacher, student) == expected


def test_more_student_layers_than_the_teacher_has_is_a_user_error():
    with pytest.raises(UserError, match="student_layers is 7.*6 encoder layers"):
        kept_layers("bottom", 6, 7)


def test_the_student_starts_from_the_kept_teacher_layers():
    teacher = _bert(layers=4)
    student = make_student(teacher, [0, 2])
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    t, s = teacher.state_dict(), student.state_dict()
    for name in ("attention.self.query.weight", "output.dense.weight"):
        assert torch.equal(s[f"bert.encoder.layer.1.{name}"], t[f"bert.encoder.layer.2.{name}"])
        assert torch.equal(s[f"bert.encoder.layer.0.{name}"], t[f"bert.encoder.layer.0.{name}"])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    # A student with every layer is the teacher, output for output.
    ids = torch.randint(1, 50, (3, 7))
    same = make_student(teacher, [0, 1, 2, 3]).eval()
    assert torch.allclose(same(input_ids=ids).logits, teacher(input_ids=ids).logits, atol=1e-6)


def _loss(alpha: float, temperature: float = 2.0, weight=None, student=None, teacher=None):
    teacher = teacher or _bert(layers=2)
    student = student or make_student(teacher, [0]).eval()  # no dropout: outputs compared exactly
    return DistillLoss(student, teacher, alpha, temperature, weight, 0.0), student, teacher


def test_alpha_zero_is_the_cross_entropy_of_the_labelled_rows():
    loss, student, _ = _loss(alpha=0.0)
    ids, mask = torch.randint(1, 50, (4, 6)), torch.ones(4, 6, dtype=torch.long)
    labels = torch.tensor([0, IGNORE, 2, 1])
    logits = student(input_ids=ids, attention_mask=mask).logits
    expected = torch.nn.functional.cross_entropy(logits[labels != IGNORE], labels[labels != IGNORE])
    assert torch.allclose(loss(ids, mask, labels), expected, atol=1e-6)
    # with class weights, averaged as PyTorch's weighted mean is
    weight = torch.tensor([1.0, 3.0, 0.5])
    weighted, *_ = _loss(alpha=0.0, weight=weight, student=student)
    expected = torch.nn.functional.cross_entropy(logits[labels != IGNORE], labels[labels != IGNORE], weight=weight)
    assert torch.allclose(weighted(ids, mask, labels), expected, atol=1e-6)


def test_the_soft_loss_vanishes_when_the_student_matches_the_teacher_and_unlabelled_batches_still_train():
    teacher = _bert(layers=2)
    twin, *_ = _loss(alpha=1.0, teacher=teacher, student=make_student(teacher, [0, 1]).eval())
    ids, mask = torch.randint(1, 50, (3, 5)), torch.ones(3, 5, dtype=torch.long)
    assert twin(ids, mask, torch.tensor([0, 1, 2])).abs().item() < 1e-6
    loss, student, _ = _loss(alpha=0.5, teacher=teacher)
    value = loss(ids, mask, torch.full((3,), IGNORE))  # no labelled row: the soft loss alone, finite
    assert torch.isfinite(value) and value.item() > 0
    value.backward()
    assert student.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())  # the teacher never trains


def test_the_transfer_set_marks_unlabelled_texts():
    train = Encoded([[1, 2], [1, 3]], np.array([0, 1]))
    both = distillation.transfer_set(train, Encoded([[1, 4, 5]]))
    assert both.input_ids[-1] == [1, 4, 5] and both.labels.tolist() == [0, 1, IGNORE]
    assert distillation.transfer_set(train, None) is train


REPORT = {"enabled": True, "teacher_val_macro_f1": 0.90, "student_val_macro_f1": 0.885}


@pytest.mark.parametrize("setting, report, max_drop, expected", [
    ("auto", {"enabled": False}, 0.01, "teacher"),
    ("auto", REPORT, 0.02, "student"),
    ("auto", REPORT, 0.01, "teacher"),  # lost 0.015 > 0.01
    ("student", REPORT, 0.0, "student"),
    ("teacher", REPORT, 1.0, "teacher"),
])
def test_the_candidate_is_chosen_on_validation(setting, report, max_drop, expected):
    chosen, why = choose_candidate(setting, report, max_drop)
    assert chosen == expected and why


def test_candidate_student_without_distill_is_refused_at_start_up(tiny_project, set_params):
    from mlcore.config import ConfigError

    set_params(register={"candidate": "student"})
    with pytest.raises(ConfigError, match="distill.enabled is false"):
        load_config()


@pytest.mark.slow
def test_off_the_stage_writes_a_note_and_the_student_is_distilled_scored_and_registered_when_on(
        tiny_project, set_params):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from tasks import distill, evaluate, finetune, prepare, pretrain, register, search

    # Two encoder layers, so that the student (alternate: one of them) is smaller than the teacher.
    set_params(pretrain={"num_layers": 2}, search={"n_trials": 1, "epochs": 1}, finetune={"epochs": 2},
               register={"require_beat_baseline": False})
    cfg = load_config()
    for stage in (prepare, pretrain, search, finetune):
        stage.run(stage_context(cfg))
    assert distill.run(stage_context(cfg)) == {"enabled": False}
    assert [p.name for p in P.STUDENT.iterdir()] == [distill.OFF_NOTE]
    evaluate.run(stage_context(cfg))
    assert "student" not in json.loads(P.METRICS.read_text())

    set_params(distill={"enabled": True, "epochs": 2}, register={"candidate": "student"})
    cfg = load_config()
    out = distill.run(stage_context(cfg))
    report = json.loads(P.DISTILL_REPORT.read_text())
    assert out["student_layers"] == 1 and report["teacher_layers"] == 2 and report["layers_kept"] == [0]
    assert report["student_parameters"] < report["teacher_parameters"]
    assert report["transfer_rows"] > len(pd.read_parquet(P.TRAIN))  # the unlabelled texts joined
    assert json.loads((P.STUDENT / "config.json").read_text())["num_hidden_layers"] == 1
    assert not (P.CHECKPOINTS / "distill").exists()

    evaluate.run(stage_context(cfg))
    student = json.loads(P.METRICS.read_text())["student"]
    assert 0 <= student["accuracy"] <= 1 and "confusion_matrix" in student

    assert register.run(stage_context(cfg))["version"] == "1"
    card = P.MODEL_CARD.read_text()
    assert "## Distillation" in card and "This version is the **student**" in card
    assert f"{student['accuracy']:.4f}" in card  # the card's results are the student's
    version = MlflowClient().get_model_version("tiny-sentiment", "1")
    run = MlflowClient().get_run(version.run_id)
    assert run.data.tags["registered.candidate"] == "student"
    model = mlflow.pyfunc.load_model("models:/tiny-sentiment/1")
    test = pd.read_parquet(P.TEST)
    predicted = model.predict(pd.DataFrame({"text": test["text"]}))
    assert np.mean(np.asarray(predicted).ravel() == test["label"].to_numpy()) == pytest.approx(student["accuracy"])


@pytest.mark.slow
def test_distill_killed_after_an_epoch_resumes_from_its_checkpoint(tiny_project, set_params):
    from tasks import finetune, prepare, pretrain, search

    set_params(pretrain={"num_layers": 2}, search={"n_trials": 1, "epochs": 1}, finetune={"epochs": 1})
    cfg = load_config()
    for stage in (prepare, pretrain, search, finetune):
        stage.run(stage_context(cfg))
    set_params(distill={"enabled": True, "epochs": 3, "patience": 3, "batch_size": 2})  # seconds per epoch
    state = Path(".checkpoints/distill/state.json")
    proc = subprocess.Popen([sys.executable, "-m", "tasks.distill"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and not state.is_file():
            time.sleep(0.05)
        assert proc.poll() is None, "distill ended before its first checkpoint"
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved_epoch = json.loads(state.read_text())["train"]["epoch"]
    assert 1 <= saved_epoch < 3
    done = subprocess.run([sys.executable, "-m", "tasks.distill"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(P.DISTILL_REPORT.read_text())
    assert report["resumed_from_epoch"] == saved_epoch and report["epochs_run"] == 3
    assert "resuming from the checkpoint" in done.stdout
