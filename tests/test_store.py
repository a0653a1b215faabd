"""The MLflow store has one rule (tracking.mlflow_uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db); a
store MLflow cannot use stops a command at start, naming where it came from; and a registration
that the configured store does not hold is never reported as registered: the flow registers it
there."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from mlcore.config import ConfigError, parse_config
from mlcore.errors import UserError
from mlcore.tracking import store
from mlcore.tracking.store import resolve_store
from tests.conftest import tiny_params
from tests.servers import free_port

FILE, ENV = "sqlite:////data/file.db", "http://mlflow:5000"
BAD = "ftp://example.invalid/x"


def test_the_params_value_wins_then_the_variable_then_a_database_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default, env = f"sqlite:///{tmp_path / 'mlflow.db'}", {"MLFLOW_TRACKING_URI": ENV}
    assert resolve_store(FILE, env) == FILE
    assert resolve_store(None, env) == ENV
    assert resolve_store(None, {}) == resolve_store("", {"MLFLOW_TRACKING_URI": ""}) == default
    # from a Config: loading filled a null from the variable already; the same rule, the same answers
    assert resolve_store(parse_config({"tracking": {"mlflow_uri": FILE}}, environ=env), env) == FILE
    assert resolve_store(parse_config({}, environ=env), env) == ENV
    assert resolve_store(parse_config({}, environ={}), {}) == default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ENV)  # the environment is os.environ unless given
    assert resolve_store() == ENV


@pytest.mark.parametrize("uri", [
    "sqlite:///mlflow.db", "sqlite:////abs/mlflow.db", "postgresql://u:p@db:5432/mlflow", "postgresql+psycopg2://u@db/m",
    "mysql+pymysql://u@db/m", "mssql://u@db/m", "http://127.0.0.1:5000", "HTTPS://mlflow.example.com", "databricks",
    "databricks://profile", "file:///tmp/mlruns", "mlruns", "/tmp/mlruns", "C:\\mlruns"])
def test_stores_mlflow_can_use_are_accepted(uri):
    assert store.problem(uri) is None
    assert parse_config({"tracking": {"mlflow_uri": uri}}, environ={}).tracking.mlflow_uri == uri


@pytest.mark.parametrize("uri, kind", [
    (BAD, "ftp"), ("s3://bucket/mlruns", "s3"), ("sqlit:///typo.db", "sqlit"), ("databricks-uc", "databricks-uc"),
    ("uc://x", "uc")])
def test_stores_mlflow_cannot_use_are_refused_naming_the_scheme(uri, kind):
    assert store.problem(uri).startswith(f"MLflow has no tracking store for the scheme {kind!r}; use sqlite:///")


def test_the_schemes_are_those_of_mlflows_tracking_store_registry():
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    # less Unity Catalog, which MLflow registers only to refuse it as a tracking store
    assert set(_tracking_store_registry._registry) - {"databricks-uc", "uc"} == store.SCHEMES


def test_a_bad_store_is_an_error_naming_the_key_or_the_variable():
    with pytest.raises(ConfigError) as err:
        parse_config({"tracking": {"mlflow_uri": BAD}}, environ={})
    assert "tracking.mlflow_uri: MLflow has no tracking store for the scheme 'ftp'" in str(err.value)
    assert f"(got '{BAD}')" in str(err.value) and "$MLFLOW_TRACKING_URI" not in str(err.value)
    with pytest.raises(ConfigError, match=r"\[tracking.mlflow_uri is from \$MLFLOW_TRACKING_URI\]"):
        parse_config({}, environ={"MLFLOW_TRACKING_URI": BAD})
    # where there is no params file (batch scoring, a bare serving check): the variable is named, no password
    with pytest.raises(UserError, match=r"^\$MLFLOW_TRACKING_URI is 'ftp://u:\*\*\*@example.invalid/x': MLflow has no"):
        resolve_store(None, {"MLFLOW_TRACKING_URI": "ftp://u:secret@example.invalid/x"})
    with pytest.raises(UserError, match=r"^tracking.mlflow_uri is 'ftp://example.invalid/x': .* Fix tracking"):
        resolve_store(BAD, {})
    assert parse_config({"tracking": {"mlflow_uri": ""}}, environ={}).tracking.mlflow_uri is None  # blank is unset


def test_the_cli_prints_the_store_and_refuses_a_server_as_a_ui_backend(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params("data/raw/reviews.csv")))
    assert store.main([]) == 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ENV)
    assert store.main(["--params", str(params)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"sqlite:///{tmp_path / 'mlflow.db'}", ENV]
    assert store.main(["--backend"]) == 2
    assert "tracking server http://mlflow:5000: open it in a browser" in capsys.readouterr().err


def _registration(directory, version="1", digest="abc") -> dict:
    record = {"model_name": "m", "version": version, "alias": "champion", "reason": "r", "metric": "macro_f1",
              "value": 0.9, "source_digest": digest}
    (directory / "reports").mkdir(exist_ok=True)
    (directory / "reports" / "registration.json").write_text(json.dumps(record))
    return record


def test_a_registration_the_store_does_not_hold_is_not_reported_and_reruns_register(tmp_path, monkeypatch):
    from flows.summary import _registration_facts
    from tasks import _dvc_state

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = parse_config({"tracking": {"mlflow_uri": f"sqlite:///{tmp_path / 'other.db'}"}}, environ={})
    assert _dvc_state.registry_changes(cfg) == []  # nothing registered yet: DVC alone decides
    record = _registration(tmp_path)
    assert store.holds(resolve_store(cfg), "m", "1") is False
    assert not (tmp_path / "other.db").exists()  # asking did not create an empty store
    assert _dvc_state.registry_changes(cfg) == [
        f"reports/registration.json names m version 1, which the MLflow store sqlite:///{tmp_path / 'other.db'} "
        f"does not hold"]
    found = _registration_facts(record, resolve_store(cfg))
    assert found[0][0] == "registered"
    assert found[0][1].startswith(f"nothing in the MLflow store sqlite:///{tmp_path / 'other.db'}: ")
    assert "dvc repro -f -s register" in found[1][1] and not any("-> alias" in value for _, value in found)


@pytest.mark.slow  # a new SQLite store takes seconds to create
def test_holds_asks_the_store_for_the_version_made_from_the_same_digest(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from flows.summary import _registration_facts
    from mlcore.tracking.registry import SOURCE_TAG

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model("m")
    client.create_model_version("m", (tmp_path / "model").as_uri(), tags={SOURCE_TAG: "abc"})
    assert store.holds(uri, "m", "1", "abc") is True and store.holds(uri, "m", "1") is True
    assert store.holds(uri, "m", "1", "another model's") is False  # another store's version 1
    assert store.holds(uri, "m", "2") is False and store.holds(uri, "nope", "1") is False
    assert _registration_facts(_registration(tmp_path), uri)[0][1].startswith("m version 1 -> alias @champion")
    down = f"http://127.0.0.1:{free_port()}"
    assert store.holds(down, "m", "1") is None  # at once, not after MLflow's retries
    assert "[not checked: the MLflow store" in _registration_facts(_registration(tmp_path), down)[0][1]


@pytest.mark.slow
@pytest.mark.e2e
def test_a_run_pointed_at_another_store_registers_the_model_there(tiny_project, set_params):
    """After a complete run, tracking.mlflow_uri names a new store: DVC sees nothing changed (the
    store is not a stage param), yet `make run` must not report a registration that store lacks."""

    def flow() -> str:
        proc = subprocess.run([sys.executable, "-m", "flows.training_pipeline"], capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    assert "registered: tiny-sentiment version 1 -> alias @" in flow()
    other = f"sqlite:///{tiny_project / 'other' / 'mlflow.db'}"
    (tiny_project / "other").mkdir()
    set_params(tracking={"mlflow_uri": other})  # over $MLFLOW_TRACKING_URI, which the fixture set
    out = flow()
    assert "stages run: register" in out
    assert "up to date (skipped): prepare, pretrain, search, finetune, distill, evaluate" in out
    assert "registered: tiny-sentiment version 1 -> alias @" in out
    digest = json.loads((tiny_project / "reports" / "registration.json").read_text())["source_digest"]
    assert store.holds(other, "tiny-sentiment", "1", digest) is True
    again = flow()
    assert "everything is up to date" in again and "registered: tiny-sentiment version 1 -> alias @" in again
