"""The distill stage: the student cut from the teacher's layers, the loss, the candidate rule, and
the stage itself, off (a note, nothing trained) and on (trained, scored, registered, resumable)."""
from __future__ import annotations

import json
import subprocess
import sys
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
from tests.test_interrupt import kill_after_first_checkpoint


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
    return DistillLoss(student, [teacher], alpha, temperature, weight, 0.0), student, teacher


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


def test_ensemble_members_take_the_next_best_trials_then_the_best_settings_again():
    import pandas as pd

    from mlcore.models import ensemble

    trials = pd.DataFrame({"trial": [0, 1, 2, 3], "state": ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"],
                           "val_macro_f1": [0.7, 0.9, 0.95, 0.8], "learning_rate": [1e-4, 2e-4, 3e-4, 4e-4],
                           "optimizer": ["adamw"] * 4, "warmup": [0.1, 0.2, 0.3, float("nan")]})
    best = {"trial": 1, "learning_rate": 2e-4, "optimizer": "adamw", "warmup": 0.2}
    picks = ensemble.member_picks(trials, best, 3, frozenset({"warmup"}))
    assert picks == [{"learning_rate": 4e-4, "optimizer": "adamw"},  # trial 3; its unsampled warmup left out
                     {"learning_rate": 1e-4, "optimizer": "adamw", "warmup": 0.1},  # trial 0; pruned 2 skipped
                     {"learning_rate": 2e-4, "optimizer": "adamw", "warmup": 0.2}]  # none left: the best again
    assert all(type(v) in (float, str) for pick in picks for v in pick.values())


def test_finished_ensemble_members_are_reused_after_a_kill(tmp_path):
    from mlcore.config.training import to_settings
    from mlcore.models import ensemble

    trained = []

    def train(settings, checkpoint_dir):
        trained.append(settings.seed)
        return torch.nn.Linear(1, 1)

    def save(model, out):
        torch.save(model.state_dict(), out / "w.pt")

    def load(folder):
        assert (folder / "w.pt").is_file()
        return torch.nn.Linear(1, 1)

    base = to_settings(epochs=1, batch_size=2, learning_rate=1e-3, seed=42)
    plans = [ensemble.member_settings(base, {"learning_rate": 2e-3}, i) for i in (1, 2)]
    assert [p.seed for p in plans] == [43, 44] and plans[0].learning_rate == 2e-3
    assert len(ensemble.trained_members(plans, train, save, load, tmp_path, "data-v1")) == 2
    assert trained == [43, 44]
    ensemble.trained_members(plans, train, save, load, tmp_path, "data-v1")
    assert trained == [43, 44]  # both reused
    ensemble.trained_members(plans, train, save, load, tmp_path, "data-v2")
    assert trained == [43, 44, 43, 44]  # other data: trained again


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
    from mlcore.data.hashing import files_digest

    teacher_digest = files_digest([*sorted(P.CLASSIFIER.glob("*.safetensors")), P.METRICS])

    set_params(distill={"enabled": True, "epochs": 2, "student_ffn": 0.5}, register={"candidate": "student"})
    cfg = load_config()
    out = distill.run(stage_context(cfg))
    report = json.loads(P.DISTILL_REPORT.read_text())
    assert out["student_layers"] == 1 and report["teacher_layers"] == 2 and report["layers_kept"] == [0]
    assert report["student_parameters"] < report["teacher_parameters"]
    assert report["transfer_rows"] > len(pd.read_parquet(P.TRAIN))  # the unlabelled texts joined
    assert report["student_ffn_units"] * 2 == report["teacher_ffn_units"]  # half the feed-forward units kept
    config = json.loads((P.STUDENT / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["intermediate_size"] == report["student_ffn_units"]
    assert not (P.CHECKPOINTS / "distill").exists()

    evaluate.run(stage_context(cfg))
    student = json.loads(P.METRICS.read_text())["student"]
    assert 0 <= student["accuracy"] <= 1 and "confusion_matrix" in student
    # A student's report in metrics.json leaves the teacher's identity as it was: a teacher registered
    # before is found again, not registered twice.
    with_student = json.loads(P.METRICS.read_text())
    assert register._source_digest(P.CLASSIFIER, register._candidate_metrics(with_student, "teacher")) == \
        teacher_digest

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
def test_an_ensemble_teacher_trains_its_members_and_teaches_with_their_mean(tiny_project, set_params):
    from tasks import distill, finetune, prepare, pretrain, search

    set_params(pretrain={"num_layers": 2}, search={"n_trials": 2, "epochs": 1}, finetune={"epochs": 1},
               distill={"enabled": True, "teacher": "ensemble", "ensemble_size": 2, "epochs": 1})
    cfg = load_config()
    for stage in (prepare, pretrain, search, finetune):
        stage.run(stage_context(cfg))
    distill.run(stage_context(cfg))
    report = json.loads(P.DISTILL_REPORT.read_text())
    assert report["teacher"] == "ensemble" and report["teacher_models"] == 2
    assert 0 <= report["ensemble_val_macro_f1"] <= 1 and len(report["ensemble_member_val_macro_f1"]) == 2
    assert report["ensemble_member_val_macro_f1"][0] == report["teacher_val_macro_f1"]
    assert not (P.CHECKPOINTS / "distill").exists()  # members and checkpoints cleared once the student is saved


@pytest.mark.slow
def test_distill_killed_after_an_epoch_resumes_from_its_checkpoint(tiny_project, set_params):
    from tasks import finetune, prepare, pretrain, search

    set_params(pretrain={"num_layers": 2}, search={"n_trials": 1, "epochs": 1}, finetune={"epochs": 1})
    cfg = load_config()
    for stage in (prepare, pretrain, search, finetune):
        stage.run(stage_context(cfg))
    set_params(distill={"enabled": True, "epochs": 3, "patience": 3, "batch_size": 2})  # seconds per epoch
    state = Path(".checkpoints/distill/student/state.json")
    saved_epoch = kill_after_first_checkpoint("distill", state)
    assert 1 <= saved_epoch < 3
    done = subprocess.run([sys.executable, "-m", "tasks.distill"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(P.DISTILL_REPORT.read_text())
    assert report["resumed_from_epoch"] == saved_epoch and report["epochs_run"] == 3
    assert "resuming from the checkpoint" in done.stdout


def test_the_card_says_which_model_this_is_and_what_taught_it():
    from mlcore.tracking import model_card

    d = {"enabled": True, "teacher": "ensemble", "teacher_models": 3, "ensemble_val_macro_f1": 0.91,
         "teacher_layers": 6, "teacher_parameters": 22_713_216,
         "teacher_val_macro_f1": 0.9, "teacher_rows_per_s": 100.0,
         "student_init": "alternate", "layers_kept": [0, 3], "student_layers": 2, "student_parameters": 15_000_000,
         "student_val_macro_f1": 0.895, "student_rows_per_s": 290.0, "transfer_rows": 1200,
         "distill_temperature": 2.0, "alpha": 0.5, "speedup": 2.9, "val_macro_f1_drop": 0.005}
    card = model_card.CardInputs(name="m", labels=["a", "b"], metric="macro_f1", decision={}, metrics={},
                                 data_report={}, finetune={}, pretrain={}, best={}, source="x", source_md5="",
                                 checkpoint=None, test_digest="", extra={"candidate": "student", "distill": d,
                                                                         "candidate_reason": "within 0.01"})
    text = model_card._distillation(card)
    assert "This version is the **student**: within 0.01." in text and "0.0050 below the teacher's" in text
    assert "an ensemble of 3 models" in text and "0.9100" in text and "2.90x the teacher's speed" in text
    assert "feed-forward units" not in text  # a student as wide as its teacher
    d |= {"teacher_ffn_units": 1536, "student_ffn_units": 768}
    assert "layers [0, 3] of the teacher's, 768 of 1536 feed-forward units)" in model_card._distillation(card)
    card.extra["distill"] = {"enabled": False}
    assert model_card._distillation(card) == ""


def test_the_summary_line_names_a_narrower_students_feed_forward_units():
    from flows.summary import _student_text

    d = {"student_layers": 3, "teacher_layers": 6, "speedup": 3.1, "val_macro_f1_drop": 0.01,
         "teacher_ffn_units": 1536, "student_ffn_units": 768}
    text = _student_text(d, {"accuracy": 0.83, "macro_f1": 0.82})
    assert text.startswith("3 of 6 layers, 768 of 1536 feed-forward units, 3.10x the teacher's rows/s: test ")
    assert _student_text(d | {"student_ffn_units": 1536}, {"accuracy": 0.83, "macro_f1": 0.82}).startswith(
        "3 of 6 layers, 3.10x")
