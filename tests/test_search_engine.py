"""search.engine prefect: workers on two "machines" (two copies of one prepared project) served
by `python -m flows.search_worker serve`, against a real PostgreSQL (the study and MLflow's
store), a real MLflow tracking server and a real Prefect server, all on loopback. One runner
is killed (SIGKILL to its process group) mid-trial: the budget still finishes exactly, the
killed trial is failed and retried, and nothing is left RUNNING anywhere.

The unit tests below check the pure parts: the setting's validation, the flow-run parameters,
and the choice of the MLflow runs to close.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mlcore.config import ConfigError, parse_config
from tests.servers import HOST, Server, free_port, group_members, script, seed_prefect_home, tail
from tests.test_postgres import INITDB, PG_CTL, postgres_url  # noqa: F401 - the fixture, used by name
from tests.test_scheduled_server import clean_env, client_of, prefect_cli, wait_for

PG = "postgresql+psycopg2://u:secret@db.example:5432/optuna"


# ---------------------------------------------------------------- pure parts


def test_engine_defaults_to_local_and_prefect_needs_postgresql():
    assert parse_config({}, environ={}).search.engine == "local"
    with pytest.raises(ConfigError, match=r"search.*engine prefect.*search.storage.*postgresql://"):
        parse_config({"search": {"engine": "prefect"}}, environ={})
    with pytest.raises(ConfigError, match="postgresql://"):
        parse_config({"search": {"engine": "prefect", "storage": "sqlite:///optuna.db"}}, environ={})
    assert parse_config({"search": {"engine": "prefect"}}, environ={"OPTUNA_STORAGE": PG}).search.storage == PG


def test_engine_is_not_part_of_the_study_identity():
    from mlcore.search.studies import study_name

    local = parse_config({"search": {"storage": PG}}, environ={}).search
    on_machines = parse_config({"search": {"storage": PG, "engine": "prefect", "workers": 4}}, environ={}).search
    assert study_name(local, "digest") == study_name(on_machines, "digest")


def test_worker_parameters_carry_the_config_but_no_password():
    from tasks._search.remote import worker_parameters

    cfg = parse_config({"search": {"engine": "prefect", "workers": 2},
                        "tracking": {"mlflow_uri": "http://mlflow.example:5000"}}, environ={"OPTUNA_STORAGE": PG})
    params = worker_parameters(cfg, "study-abc", "run-1", 2)
    assert (params["study"], params["parent_run_id"], params["worker"]) == ("study-abc", "run-1", 2)
    assert params["config"]["search"]["storage"] is None  # the worker's own $OPTUNA_STORAGE fills it
    assert params["config"]["tracking"]["mlflow_uri"] == "http://mlflow.example:5000"  # no password: sent
    again = parse_config(params["config"], environ={"OPTUNA_STORAGE": PG})  # what the worker validates
    assert again == cfg
    with pytest.raises(ConfigError, match="OPTUNA_STORAGE"):
        parse_config(params["config"], environ={})  # no storage on the worker's machine: named


def test_without_a_prefect_api_the_stage_runs_alone(capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks._search.remote import submit

    cfg = parse_config({"search": {"engine": "prefect", "workers": 2}}, environ={"OPTUNA_STORAGE": PG})
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert submit(cfg, "study-abc", None) == []
    assert "PREFECT_API_URL is not set" in capsys.readouterr().out


def test_only_running_runs_of_failed_trials_are_closed():
    from mlcore.tracking.trial_runs import trial_runs_to_close

    running = {"r0": "0", "r2": "2", "r5": "5", "other": ""}
    assert trial_runs_to_close(running, {2, 5, 7}) == ["r2", "r5"]
    assert trial_runs_to_close(running, set()) == []


# ---------------------------------------------------------------- two machines, one killed

N_TRIALS = 6


def _machine(project: Path, dest: Path) -> Path:
    """A copy of the prepared project as another machine would hold it after `dvc pull`."""
    shutil.copytree(project, dest, symlinks=True, ignore=shutil.ignore_patterns(
        "mlflow.db", "mlartifacts", "optuna", "__pycache__", "logs"))
    return dest


def _owned_by(trial, groups: dict[str, int]) -> str | None:
    """The runner whose process group holds the process running `trial` (its "owner" attribute)."""
    pid = (trial.user_attrs.get("owner") or {}).get("pid")
    for name, pgid in groups.items():
        if pid and any(line.split()[1] == pid for line in group_members(pgid)):
            return name
    return None


def _trial_run_running(tracking: str, experiment: str, number: int) -> bool:
    from mlflow import MlflowClient

    client = MlflowClient(tracking)
    found = client.get_experiment_by_name(experiment)
    return found is not None and bool(client.search_runs(
        [found.experiment_id], f"tags.`optuna.trial` = '{number}' and attributes.status = 'RUNNING'"))


def _assert_the_budget_finished_with_a_retry(storage) -> list:
    """One study, exactly the budget finished, each failed trial retried, none running; its trials."""
    import optuna

    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    states = [t.state.name for t in trials]
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == N_TRIALS, states
    failed = [t.number for t in trials if t.state.name == "FAIL"]
    assert failed and "RUNNING" not in states, states
    retried = {optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials}
    assert set(failed) <= retried, (failed, retried)
    assert len({t.user_attrs["owner"]["pid"] for t in trials}) >= 2  # the stage and a runner both ran
    return trials


def _assert_trial_runs_nest_under_one_search_run(tracking: str, experiment: str, trials: list) -> None:
    """On the tracking server: a run per trial, each a child of the one search run; none RUNNING."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=500)
    (search_run,) = [r for r in found if r.info.run_name == "search"]
    trial_runs = [r for r in found if r.info.run_name.startswith("trial-")]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in trial_runs) == [t.number for t in trials]
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {search_run.info.run_id}
    assert [r.info.run_name for r in found if r.info.status == "RUNNING"] == []
    assert {r.data.tags["optuna.trial"] for r in trial_runs if r.info.status == "FAILED"} \
        == {str(t.number) for t in trials if t.state.name == "FAIL"}


def _assert_flow_runs_ended(api: str) -> None:
    """Both workers submitted, none left unfinished; the killed runner's run Crashed."""
    from prefect.client.schemas.sorting import FlowRunSort

    with client_of(api) as client:
        flow_runs = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=50)
    described = [(r.name, r.state.type.value, r.state.message) for r in flow_runs]
    assert len(flow_runs) == 2, described
    assert all(r.state.is_final() for r in flow_runs), described
    assert any(r.state.is_crashed() for r in flow_runs), described


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # retried_trial_number
@pytest.mark.skipif(INITDB is None or PG_CTL is None, reason="PostgreSQL server binaries not installed")
def test_search_on_two_machines_survives_a_killed_runner(tiny_project, set_params, postgres_url, tmp_path):  # noqa: F811
    import optuna

    from mlcore.config import load_config
    from tasks import prepare, pretrain
    from tasks._context import stage_context

    began = time.monotonic()
    subprocess.run(["psql", "-h", HOST, "-p", str(urlsplit(postgres_url).port), "-U", "postgres", "-c",
                    "CREATE DATABASE mlflow"], check=True, capture_output=True)
    env = clean_env(seed_prefect_home(tmp_path / "prefect-home"))
    prefect_port, mlflow_port = free_port(), free_port()
    api, tracking = f"http://{HOST}:{prefect_port}/api", f"http://{HOST}:{mlflow_port}"
    servers, runners = [], {}
    try:
        # Both servers start while this process prepares the project.
        # No UI, no services (scheduler, late runs...): runners poll for the runs the stage creates.
        servers.append(Server([prefect_cli(), "server", "start", "--host", HOST, "--port", str(prefect_port),
                               "--no-ui", "--no-services"], tmp_path / "prefect.log", api, env=env))
        servers.append(Server([script("mlflow") or "mlflow", "server", "--backend-store-uri",
                               postgres_url.replace("/optuna", "/mlflow"), "--artifacts-destination",
                               str(tmp_path / "artifacts"), "--host", HOST, "--port", str(mlflow_port),
                               "--workers", "1"], tmp_path / "mlflow.log", tracking))
        # Trials of a few seconds (epochs x tiny batches), so a runner can be killed mid-trial.
        set_params(search=dict(n_trials=N_TRIALS, workers=2, engine="prefect", storage=postgres_url, pruner="none",
                               epochs=4, batch_size=4, heartbeat_interval=1, grace_period=3))
        cfg = load_config()
        prepare.run(stage_context(cfg))
        pretrain.run(stage_context(cfg))
        machines = {name: _machine(tiny_project, tmp_path / f"machine-{name}") for name in ("a", "b")}
        print(f"prepared: {time.monotonic() - began:.0f} s")
        servers[0].wait_ready(f"{api}/health")
        env.update(PREFECT_API_URL=api, MLFLOW_TRACKING_URI=tracking, OPTUNA_STORAGE=postgres_url,
                   PREFECT_RUNNER_POLL_FREQUENCY="1", PATH=os.environ["PATH"])
        for name, root in machines.items():
            runners[name] = Server([sys.executable, "-m", "flows.search_worker", "serve", "--limit", "1"],
                                   tmp_path / f"runner-{name}.log", env=env, cwd=root)
        servers[1].wait_ready(f"{tracking}/health")
        logs = tuple(r.log for r in runners.values()) + tuple(s.log for s in servers)
        for r in runners.values():
            wait_for("the runner to serve", lambda r=r: r.proc.poll() is None and "search-worker" in tail(r.log),
                     timeout=120, logs=logs)
        print(f"runners serving: {time.monotonic() - began:.0f} s")

        # The search stage on machine a (a runner there too), as `dvc repro` would run it.
        stage = Server([sys.executable, "-m", "tasks.search"], tmp_path / "search.log", env=env, cwd=machines["a"])
        servers.append(stage)
        logs += (stage.log,)
        storage = optuna.storages.RDBStorage(postgres_url)
        groups = {name: r.pgid for name, r in runners.items()}

        def a_runner_mid_trial():
            """A runner running a trial whose MLflow run has started (the kill leaves it RUNNING)."""
            for summary in optuna.get_all_study_summaries(storage):
                study = optuna.load_study(study_name=summary.study_name, storage=storage)
                for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
                    name = _owned_by(trial, groups)
                    if name is not None and _trial_run_running(tracking, cfg.tracking.experiment, trial.number):
                        return name
            assert stage.proc.poll() is None, f"the search ended before a runner ran a trial:\n{tail(stage.log)}"
            return None

        killed = wait_for("a runner's trial", a_runner_mid_trial, timeout=180, every=0.2, logs=logs)
        print(f"killing runner {killed}: {time.monotonic() - began:.0f} s")
        os.killpg(groups[killed], signal.SIGKILL)
        wait_for("the killed runner's group to end", lambda: not group_members(groups[killed]), timeout=10)
        assert stage.proc.wait(timeout=300) == 0, tail(stage.log, 120)
        print(f"search done: {time.monotonic() - began:.0f} s")

        trials = _assert_the_budget_finished_with_a_retry(storage)
        _assert_trial_runs_nest_under_one_search_run(tracking, cfg.tracking.experiment, trials)
        _assert_flow_runs_ended(api)
    finally:
        with ThreadPoolExecutor() as stopping:  # each waits out its own grace: at once, not in turn
            list(stopping.map(Server.stop, [*runners.values(), *servers]))
    for server in [*runners.values(), *servers]:
        assert not group_members(server.pgid), group_members(server.pgid)
    print(f"two-machine search with a killed runner: {time.monotonic() - began:.0f} s")
