"""`make serve-model` (`python -m mlcore.tracking.serving`): the champion served by the real
`mlflow models serve` it becomes (labels, calibrated scores, a 4xx for a bad request, nothing left
running); what it execs; its one-paragraph errors (no store, no model, no champion); and
`python -m mlcore.config --get`."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
import yaml

from mlcore.config.__main__ import main as config_main
from mlcore.errors import UserError
from mlcore.models import classifier_pooling, modeling
from mlcore.tracking import serving
from tests import servers
from tests.conftest import ROOT, tiny_params

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


def write_params(path, store: str | None, name: str = "tiny-sentiment"):
    params = tiny_params("data/raw/reviews.csv")
    params["register"]["model_name"] = name
    params["tracking"]["mlflow_uri"] = store
    path.write_text(yaml.safe_dump(params))
    return path


def test_no_store_means_no_champion_and_no_new_empty_store(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(UserError, match="No MLflow store.*make run"):
        serving.champion_uri("anything")
    assert not (tmp_path / "mlflow.db").exists()

    # The command: the store of the params file (tracking.mlflow_uri), one paragraph, exit status 2.
    params = write_params(tmp_path / "params.yaml", f"sqlite:///{tmp_path / 'other.db'}")
    for argv in (["--check"], []):
        assert serving.main([*argv, "--params", str(params)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: No MLflow store at sqlite:///") and "other.db" in err and "make run" in err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "other.db").exists() and not (tmp_path / "mlflow.db").exists()
    assert serving.main(["--params", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_the_command_execs_mlflow_models_serve_of_the_champion_from_the_store(tmp_path, monkeypatch, capsys):
    """Store from the params file, name from register.model_name (or NAME), the champion check, then
    `mlflow models serve` in place of this process, on loopback unless told."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = write_params(tmp_path / "params.yaml", store, name="served")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///not-this-one.db")  # tracking.mlflow_uri wins
    checked, execs = [], []
    monkeypatch.setattr(serving, "champion_uri", lambda name, store: checked.append((name, store))
                        or f"models:/{name}@champion")

    def execve(path, args, env):
        execs.append((path, args, env))
        raise SystemExit(0)  # as if the server had taken over and ended
    monkeypatch.setattr(os, "execve", execve)

    assert serving.main(["--check", "--params", str(params)]) == 0
    assert capsys.readouterr().out == "models:/served@champion\n" and not execs
    with pytest.raises(SystemExit):
        serving.main(["--params", str(params)])
    with pytest.raises(SystemExit):
        serving.main(["other", "--params", str(params), "--host", "0.0.0.0", "--port", "8080"])
    assert checked == [("served", store)] * 2 + [("other", store)]
    (path, args, env), (_, other, _) = execs
    assert args == [path, "models", "serve", "-m", "models:/served@champion", "--env-manager", "local",
                    "--host", "127.0.0.1", "--port", "5001"]
    assert other[-7:] == ["models:/other@champion", "--env-manager", "local", "--host", "0.0.0.0", "--port", "8080"]
    assert os.path.basename(path) == "mlflow" and os.access(path, os.X_OK)
    assert env["MLFLOW_TRACKING_URI"] == store
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)  # uvicorn from this venv
    assert f"serving models:/served@champion from {store} at http://127.0.0.1:5001/invocations" \
        in capsys.readouterr().out


@pytest.fixture
def champion(tiny_base_dir, tmp_path, monkeypatch, capsys):
    """A mean-pooled tiny classifier with a fitted-looking temperature, registered as `served@champion`
    in a temporary SQLite store; returns (the store's URI, a params file naming both, the model, its
    tokenizer). On the way, the command's errors for a store without the model, then without @champion."""
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
    params = write_params(tmp_path / "params.yaml", store, name="served")
    assert serving.main(["--check", "--params", str(params)]) == 2
    assert "has no registered model 'served' (register.model_name)" in capsys.readouterr().err
    with mlflow.start_run():
        version = registry.log_classifier(model_dir, TEXTS[:2], list(LABELS), "served").version
    with pytest.raises(UserError, match="no @champion version"):
        serving.champion_uri("served")
    assert serving.main(["--params", str(params)]) == 2
    assert "has no @champion version (no aliases)" in capsys.readouterr().err
    MlflowClient().set_registered_model_alias("served", "champion", version)
    return store, params, model.eval(), tokenizer


@pytest.mark.slow
def test_the_champion_served_by_mlflow_answers_labels_calibrated_scores_and_4xx(champion, tmp_path):
    store, params, model, tokenizer = champion
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
    # The command `make serve-model` runs, which becomes `mlflow models serve`: this checkout's mlcore,
    # and the store from the params file alone.
    port = servers.free_port()
    command = [sys.executable, "-m", "mlcore.tracking.serving", "--params", str(params), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with servers.running(command, tmp_path / "server.log", f"http://{servers.HOST}:{port}", ready="/ping",
                         env=env, cwd=tmp_path) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.log.read_text().startswith(
            f"serving models:/served@champion from {store} at http://127.0.0.1:{port}/invocations")
        status, answer = servers.invoke(server.url, body)
        assert status == 200, answer
        assert answer["predictions"] == [{"label": label} for label in expected_labels]  # the Series "label"

        status, answer = servers.invoke(server.url, {**body, "params": {"return_scores": True}})
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
            status, answer = servers.invoke(server.url, bad)
            assert 400 <= status < 500, (status, answer)
            assert isinstance(answer, dict) and answer.get("message"), answer
    assert server.proc.returncode is not None
    assert servers.group_members(server.pgid) == [], servers.tail(server.log)
