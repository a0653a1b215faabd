"""MLFLOW_TRACKING_URI, OPTUNA_STORAGE and PIPELINE_DEVICE are resolved into the raw params
before validation: the model checks every rule once, whatever set the value."""
import json

import pytest

from mlcore.config import ConfigError, load_config, parse_config
from mlcore.config.environment import redact, resolve_environment
from mlcore.tracking.store import resolve_store

ENV = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "OPTUNA_STORAGE": "postgresql://u@db/optuna",
       "PIPELINE_DEVICE": "cpu"}
FILE = {"tracking": {"mlflow_uri": "sqlite:///file.db"}, "search": {"storage": "optuna/file.journal"},
        "runtime": {"device": "cuda"}}


def test_precedence_is_unchanged():
    # tracking.mlflow_uri or $MLFLOW_TRACKING_URI; $OPTUNA_STORAGE or search.storage; $PIPELINE_DEVICE or runtime.device
    both = parse_config(FILE, environ=ENV)
    assert resolve_store(both, {}) == "sqlite:///file.db"
    assert both.optuna_storage() == "postgresql://u@db/optuna"
    assert both.device() == "cpu"
    env_only = parse_config({}, environ=ENV)
    assert (resolve_store(env_only, {}), env_only.optuna_storage(), env_only.device()) == (
        "http://mlflow:5000", "postgresql://u@db/optuna", "cpu")
    file_only = parse_config(FILE, environ={})
    assert (resolve_store(file_only, {}), file_only.optuna_storage(), file_only.device()) == (
        "sqlite:///file.db", "optuna/file.journal", "cuda")
    empty = parse_config({}, environ={"OPTUNA_STORAGE": "", "PIPELINE_DEVICE": ""})  # empty counts as unset
    assert (empty.optuna_storage(), empty.device()) == (None, "auto")


def test_mlflow_uri_falls_back_to_a_database_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_store(parse_config({}, environ={}), {}) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert parse_config({}, environ={}).tracking.mlflow_uri is None


def test_sqlite_with_workers_is_refused_once_whether_from_the_file_or_the_environment():
    with pytest.raises(ConfigError, match=r"search: workers is 2 but storage is SQLite") as err:
        parse_config({"search": {"workers": 2, "storage": "sqlite:///o.db"}}, environ={})
    assert "$OPTUNA_STORAGE" not in str(err.value)
    with pytest.raises(ConfigError, match=r"search: workers is 2 but storage is SQLite \(sqlite:///o.db\)") as err:
        parse_config({"search": {"workers": 2}}, environ={"OPTUNA_STORAGE": "sqlite:///o.db"})
    assert "[search.storage is from $OPTUNA_STORAGE]" in str(err.value)
    assert "or the environment variables named" in str(err.value)
    assert parse_config({"search": {"workers": 2}},
                        environ={"OPTUNA_STORAGE": "postgresql://u@db/o"}).search.workers == 2


def test_a_bad_device_from_the_environment_is_named():
    with pytest.raises(ConfigError,
                       match=r"runtime.device: .*\(got 'gpu'\) \[runtime.device is from \$PIPELINE_DEVICE\]"):
        parse_config({}, environ={"PIPELINE_DEVICE": "gpu"})


def test_load_config_resolves_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "params.yaml"
    path.write_text("search:\n  workers: 3\n")
    monkeypatch.setenv("OPTUNA_STORAGE", "sqlite:///x.db")
    with pytest.raises(ConfigError, match=r"params.yaml: invalid configuration:\n  search: workers is 3"):
        load_config(path)
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://u@db/o")
    assert load_config(path).search.storage == "postgresql://u@db/o"


@pytest.mark.parametrize("environ", [{}, ENV])
def test_a_dumped_config_parses_back_to_itself(environ):
    """Worker processes get the frozen config as JSON and parse it again."""
    for raw in ({}, FILE, {"search": {"space": {"warmup": [0.0, 0.2]}, "grid": None}}):
        cfg = parse_config(raw, environ=environ)
        again = parse_config(json.loads(json.dumps(cfg.model_dump())), "frozen.json", environ=environ)
        assert again == cfg and again.model_dump() == cfg.model_dump()


def test_resolving_leaves_the_callers_dict_alone_and_skips_what_is_not_a_mapping():
    raw = {"search": {"workers": 1}, "runtime": None}
    resolved, sources = resolve_environment(raw, ENV)
    assert raw == {"search": {"workers": 1}, "runtime": None}
    assert resolved["search"] == {"workers": 1, "storage": "postgresql://u@db/optuna"}
    assert resolved["runtime"] == {"device": "cpu"} and resolved["tracking"] == {"mlflow_uri": "http://mlflow:5000"}
    assert sources == {"tracking.mlflow_uri": "MLFLOW_TRACKING_URI", "search.storage": "OPTUNA_STORAGE",
                       "runtime.device": "PIPELINE_DEVICE"}
    assert resolve_environment({"search": 5}, ENV)[0]["search"] == 5
    with pytest.raises(ConfigError, match="search: Input should be a valid dictionary"):
        parse_config({"search": 5}, environ=ENV)


def test_store_urls_are_redacted_for_logs():
    assert redact("postgresql+psycopg2://USER:PASSWORD@DBHOST:5432/optuna") == "postgresql+psycopg2://USER:***@DBHOST:5432/optuna"
    assert redact("postgresql://u@db/o") == "postgresql://u@db/o"
    assert redact("http://a:b:c@host/x?y=1") == "http://a:***@host/x?y=1"
    assert [redact(v) for v in (None, "", "optuna/x.journal", "sqlite:///x.db")] == [None, "", "optuna/x.journal", "sqlite:///x.db"]
