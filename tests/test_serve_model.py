"""`make serve-model`: the champion served by the real `mlflow models serve` (labels, calibrated
scores, a 4xx for a bad request, nothing left running), and the two commands the target runs
first (`python -m mlcore.config --get`, `python -m mlcore.tracking.serving NAME`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from mlcore.config.__main__ import main as config_main
from mlcore.errors import UserError
from mlcore.models import classifier_pooling, modeling
from mlcore.tracking import serving
from tests.conftest import tiny_params

LABELS = {"fresh": 0, "rotten": 1}
TEMPERATURE = 2.0
TEXTS = ["a great and moving film", "boring , tedious and dull", "the cast is superb but the plot a mess",
         "wonderful"]


def test_config_get_prints_a_dotted_key_of_the_validated_params(tmp_path, capsys, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params("data/raw/reviews.csv")))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert config_main(["--get", "register.model_name", "--params", str(params)]) == 0
    assert config_main(["--get", "search.optimizers", "--params", str(params)]) == 0
    assert config_main(["--get", "tracking.mlflow_uri", "--params", str(params)]) == 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")  # fills the null, as for every command
    assert config_main(["--get", "tracking.mlflow_uri", "--params", str(params)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "tiny-sentiment", '["adam", "adamw"]', "null", "sqlite:///elsewhere.db"]
    assert config_main(["--get", "register.nmae", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "register.nmae" in err and "model_name" in err


def test_no_store_means_no_champion_and_no_new_empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(UserError, match="No MLflow store.*make run"):
        serving.champion_uri("anything")
    assert not (tmp_path / "mlflow.db").exists()


@pytest.fixture
def champion(tiny_base_dir, tmp_path, monkeypatch):
    """A mean-pooled tiny classifier with a fitted-looking temperature, registered as `served@champion`
    in a temporary SQLite store; returns (the store's URI, the model, its tokenizer)."""
    import mlflow
    from mlflow import MlflowClient

    from mlcore.tracking import registry

    torch.manual_seed(5)
    model, tokenizer = modeling.load_classifier(tiny_base_dir, LABELS, pooling="mean")
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1.0)  # scores far from uniform, so a wrong temperature shows
    model_dir = modeling.save(model, tokenizer, tmp_path / "classifier")
    # Written into the file: transformers 5 will not save_pretrained a config with `temperature`.
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(config | {"temperature": TEMPERATURE}))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    # Artifacts beside the store, not in ./mlruns (MLflow's default for a SQLite store).
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("serving", (tmp_path / "artifacts").as_uri()))
    with mlflow.start_run():
        version = registry.log_classifier(model_dir, TEXTS[:2], list(LABELS), "served").version
    with pytest.raises(UserError, match="no @champion version"):
        serving.champion_uri("served")
    MlflowClient().set_registered_model_alias("served", "champion", version)
    return store, model.eval(), tokenizer


@pytest.mark.slow
def test_the_champion_served_by_mlflow_answers_labels_calibrated_scores_and_4xx(champion, tmp_path):
    store, model, tokenizer = champion
    uri = serving.champion_uri("served")
    assert uri == "models:/served@champion"
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = classifier_pooling.logits(model, enc["input_ids"], enc["attention_mask"])
    expected = torch.softmax(logits / TEMPERATURE, dim=-1).numpy()
    expected_labels = [list(LABELS)[i] for i in logits.argmax(1).tolist()]
    assert len(set(expected_labels)) == 2  # both classes, so a constant answer would fail
    assert not np.allclose(expected, torch.softmax(logits, dim=-1).numpy(), atol=1e-3)  # T shows

    body = {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}
    with serving.serving(uri, tmp_path / "server.log", tracking_uri=store) as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, answer = serving.invoke(server.url, body)
        assert status == 200, answer
        assert answer["predictions"] == [{"label": label} for label in expected_labels]  # the Series "label"

        status, answer = serving.invoke(server.url, {**body, "params": {"return_scores": True}})
        assert status == 200, answer
        rows = answer["predictions"]
        assert [r["label"] for r in rows] == expected_labels
        scores = np.array([[r["score_fresh"], r["score_rotten"]] for r in rows])
        np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-6)
        np.testing.assert_allclose(scores, expected, atol=1e-5)  # softmax(logits / T), not T = 1

        malformed = (b'{"dataframe_split": {"columns": ["text"], "data": [["cut short"',  # not JSON
                     b'{"rows": ["a film"]}',  # no dataframe_split / inputs
                     b'{"dataframe_split": {"columns": ["review"], "data": [["a film"]]}}')  # not the signature's
        for bad in malformed:
            status, answer = serving.invoke(server.url, bad)
            assert 400 <= status < 500, (status, answer)
            assert isinstance(answer, dict) and answer.get("message"), answer
    assert server.proc.returncode is not None
    assert serving.group_alive(server.pgid) == [], serving.tail(server.log)
