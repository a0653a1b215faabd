"""The champion gate re-scores the champion on this run's test rows; lineage, the model card,
calibration and the audit record on every version; rollback and manual promotion."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlcore.config import load_config
from mlcore.tracking import audit, model_card
from mlcore.tracking.gate import metric_on
from tasks import _paths as P
from tasks._context import stage_context

pytestmark = pytest.mark.slow
NAME = "tiny-sentiment"


def _set_metrics(**values) -> None:
    P.METRICS.write_text(json.dumps(json.loads(P.METRICS.read_text()) | values))


def _champion_on_test(version: str) -> float:
    """The version's macro-F1 on this workspace's test split, scored independently of register."""
    test = pd.read_parquet(P.TEST)
    predicted = mlflow.pyfunc.load_model(f"models:/{NAME}/{version}").predict(pd.DataFrame({"text": test["text"]}))
    return metric_on(list(predicted), list(test["label"]), ["fresh", "rotten"], "macro_f1")


def _lineage(version) -> dict:
    """The version's lineage.json, as its register run logged it."""
    return json.loads(mlflow.artifacts.load_text(f"runs:/{version.run_id}/lineage.json"))


def test_gate_rescoring_lineage_card_audit_and_rollback(tiny_project, set_params, capsys):
    from flows import registry as registry_cli
    from tasks import evaluate, finetune, prepare, pretrain, register, search

    # The tiny data is separable word by word: TF-IDF scores 1.0 and would block every model.
    set_params(search={"n_trials": 1, "epochs": 1}, finetune={"epochs": 2},
               register={"require_beat_baseline": False})
    cfg = load_config()
    for stage in (prepare, pretrain, search, finetune, evaluate):
        stage.run(stage_context(cfg))
    metrics = json.loads(P.METRICS.read_text())
    assert {"temperature", "ece", "ece_uncalibrated"} <= set(metrics) and metrics["temperature"] > 0
    assert json.loads((P.CLASSIFIER / "config.json").read_text())["temperature"] == metrics["temperature"]

    assert register.run(stage_context(cfg)) == {"version": "1", "alias": "champion"}
    client = MlflowClient()
    v1 = client.get_model_version(NAME, "1")
    made_from = _lineage(v1)
    for value in (made_from["data"]["raw_dvc_md5"], made_from["dvc_lock"]["prepare"], made_from["dvc_lock"]["evaluate"],
                  made_from["git"]["commit"], made_from["params_md5"], made_from["runs"]["pretrain"],
                  made_from["runs"]["finetune"], made_from["search"]["study"], made_from["search"]["best_trial"],
                  made_from["data"]["test_digest"], *made_from["numerics"].values()):
        assert value not in (None, "", "unknown"), made_from
    # the version's tags read at a glance: what gate and rerun read back, and a few plain facts
    assert set(v1.tags) == {"git.commit", "data.raw_path", "checkpoint", "optuna.study", "numerics", "source.digest",
                            "gate.reason", "test_macro_f1", "test_baseline_macro_f1", "serve.format"}
    finetune_run = client.get_run(made_from["runs"]["finetune"])
    assert v1.tags["numerics"].startswith(f"{finetune_run.data.tags['numerics.precision']} on cpu: ")
    assert made_from["runs"]["finetune"] == json.loads(P.FINETUNE_REPORT.read_text())["mlflow_run_id"]
    card = P.MODEL_CARD.read_text()
    # the version's description is the card, its confusion matrix served from the version's artifacts
    assert v1.description.startswith(model_card.first_paragraph(card)) and "## Test results" in v1.description
    assert "](model-versions/get-artifact?path=artifacts%2Fconfusion_matrix.png&name=tiny-sentiment&version=1)" \
        in v1.description
    for section in ("## Data", "## Training recipe", "## Test results", "## Calibration", "## Serving",
                    "## Intended use"):
        assert section in card
    assert f"- Numerics: {made_from['numerics']['precision']} on cpu: " in card
    assert v1.tags["serve.format"] == "torch" and "Format: **torch**" in card  # the default: no check needed
    logged = mlflow.artifacts.download_artifacts(f"models:/{NAME}/1", dst_path=str(tiny_project / "v1"))
    assert "## Calibration" in next((tiny_project / "v1").rglob("MODEL_CARD.md")).read_text(), logged
    # the logged model is named after the registered one and its params are the settings it was trained with
    logged_model = client.get_logged_model(v1.source.removeprefix("models:/"))
    trained = json.loads(P.FINETUNE_REPORT.read_text())
    assert logged_model.name == NAME and logged_model.params["optimizer"] == trained["optimizer"]
    assert float(logged_model.params["learning_rate"]) == trained["learning_rate"]
    assert {"batch_size", "epochs", "epochs_run"} <= set(logged_model.params) \
        and "require_beat_baseline" not in logged_model.params  # the gate's settings are the register run's
    model = client.get_registered_model(NAME)
    assert model.description and model.tags["task"] == "text-classification"
    run = client.get_run(json.loads(P.REGISTRATION.read_text())["run_id"])
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"train", "val", "test"}
    exp = client.get_experiment_by_name("tests")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    # A rerun of register (a killed one, or a forced one) finds its version: still champion, no new audit line.
    assert register.run(stage_context(cfg)) == {"version": "1", "alias": "champion"}
    assert len(audit.read(client, NAME)) == 1 and json.loads(P.REGISTRATION.read_text())["alias"] == "champion"
    assert client.get_model_version(NAME, "1").tags["gate.reason"] == v1.tags["gate.reason"]  # its own, kept

    # The champion's stored metric (0.99) came from another split. The gate scores it again on these
    # rows: a new model just above that score wins although it is below the stored one.
    client.set_model_version_tag(NAME, "1", "test_macro_f1", "0.99")
    on_these_rows = _champion_on_test("1")
    _set_metrics(macro_f1=on_these_rows + 0.001)
    # ... registered in ONNX this time: checked on the test rows, shipped beside the torch weights, served.
    set_params(register={"serve_format": "onnx"})
    assert register.run(stage_context(load_config())) == {"version": "2", "alias": "champion"}
    v2 = client.get_model_version(NAME, "2").tags
    assert v2["serve.format"] == "onnx" and json.loads(P.REGISTRATION.read_text())["serve_agreement"] == 1.0
    assert "Format: **onnx**" in P.MODEL_CARD.read_text() and "100.00% of the test rows" in P.MODEL_CARD.read_text()
    served = mlflow.pyfunc.load_model(f"models:/{NAME}/2")
    assert served.unwrap_python_model().served_format == "onnx"
    requirements = mlflow.artifacts.download_artifacts(f"models:/{NAME}/2/requirements.txt", dst_path=str(tiny_project))
    assert "onnxruntime==" in Path(requirements).read_text()
    assert float(v2["gate.champion_value_same_rows"]) == pytest.approx(on_these_rows)
    assert float(v2["gate.champion_stored_value"]) == 0.99 and v2["gate.champion_version"] == "1"
    assert _lineage(client.get_model_version(NAME, "2"))["data"]["test_digest"] == made_from["data"]["test_digest"]
    # ... and one just below it loses, although it beats the stored 0.5.
    client.set_model_version_tag(NAME, "2", "test_macro_f1", "0.5")
    _set_metrics(macro_f1=_champion_on_test("2") - 0.001)
    assert register.run(stage_context(cfg)) == {"version": "3", "alias": "challenger"}
    assert "both on this run's" in client.get_model_version(NAME, "3").tags["gate.reason"]

    # A champion with another label set cannot be compared: reported, and the new model's own result decides.
    other = tiny_project / "other_labels"
    shutil.copytree(P.CLASSIFIER, other)
    config = json.loads((other / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "pos", "1": "neg"}, {"pos": 0, "neg": 1}
    (other / "config.json").write_text(json.dumps(config))
    from mlcore.tracking import registry

    with mlflow.start_run():
        odd = str(registry.log_classifier(other, ["a film"], ["pos", "neg"], NAME).version)  # version 4
    registry_cli.promote(client, NAME, odd, "a different task, for the test")
    _set_metrics(macro_f1=0.42)
    assert register.run(stage_context(cfg)) == {"version": "5", "alias": "champion"}
    v5 = client.get_model_version(NAME, "5").tags
    assert "differ from this run's" in v5["gate.champion_unscored"]
    assert "this model's own test result decided" in v5["gate.reason"]
    assert "could not be scored" in P.MODEL_CARD.read_text()

    # The audit record: every move of champion, and the keep of version 3.
    lines = audit.read(client, NAME)
    assert [(e["action"], e["from"], e["to"]) for e in lines] == [
        ("promote", None, "1"), ("promote", "1", "2"), ("keep", "2", "2"), ("manual-promote", "2", odd),
        ("promote", odd, "5")]
    assert lines[2]["challenger"] == "3" and all(e["by"] and e["at"] and e["reason"] for e in lines)

    # Rollback walks back through the champions (4, then 2, then 1), audited; then there is nowhere to go.
    for expected in (odd, "2", "1"):
        assert registry_cli.main(["rollback", "--reason", "bad release"]) == 0
        assert str(client.get_model_version_by_alias(NAME, "champion").version) == expected
    assert audit.read(client, NAME)[-1] | {"at": None, "by": None} == {
        "action": "rollback", "from": "2", "to": "1", "reason": "bad release", "at": None, "by": None}
    assert registry_cli.main(["rollback", "--reason", "again"]) == 2
    assert "names no champion before version 1" in capsys.readouterr().err
    assert registry_cli.main(["promote", "--version", "99", "--reason", "x"]) == 2
    assert registry_cli.main(["history"]) == 0
    assert "rollback" in capsys.readouterr().out
