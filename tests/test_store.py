"""The MLflow store has one rule (tracking.mlflow_uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db), and
a store MLflow cannot use stops a command at start, naming where it came from."""
from __future__ import annotations

import pytest
import yaml

from mlcore.config import ConfigError, parse_config
from mlcore.errors import UserError
from mlcore.tracking import store
from mlcore.tracking.store import resolve_store
from tests.conftest import tiny_params

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
