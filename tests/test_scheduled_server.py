"""Scheduled retraining against a real `prefect server start`, and the run policy of the deployment.

The slow tests start a Prefect server on 127.0.0.1 (a free port, a temporary PREFECT_HOME,
analytics off), so its scheduler service, its orchestration rules and `python -m flows.deploy`
run as in production; they stop every process they started, whole process groups, and check
with `ps` that nothing is left. The others test the failure hook and the retry classifier alone.
"""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from flows import _hooks as tp
from mlcore.config import ConfigError
from tests.servers import HOST, Server, free_port, group_members, running, script, seed_prefect_home, tail

DEPLOYMENT = "training-pipeline/nightly-retraining"


# ---------------------------------------------------------------- helpers


def prefect_cli() -> str:
    exe = script("prefect")
    if exe is None:
        pytest.skip("the prefect CLI is not installed")
    return exe


def wait_for(what: str, check, timeout: float, every: float = 1.0, logs: tuple[Path, ...] = ()):
    """Poll `check()` until it returns something truthy; fail with the logs' tails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{tail(p)}" for p in logs)
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(every)


def clean_env(home: Path) -> dict[str, str]:
    """This process's environment without any PREFECT_* setting, plus a private home, analytics off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    return env


@contextlib.contextmanager
def prefect_server(tmp: Path):
    """`prefect server start` on 127.0.0.1:<free port>, once /api/health answers; yields
    (api_url, env for its clients, server)."""
    cli = prefect_cli()
    home = seed_prefect_home(tmp / "prefect-home")
    env = clean_env(home)
    port = free_port()
    with running([cli, "server", "start", "--host", HOST, "--port", str(port)], tmp / "server.log",
                 f"http://{HOST}:{port}", ready="/api/health", timeout=120, env=env) as server:
        api = f"{server.url}/api"
        yield api, {**env, "PREFECT_API_URL": api}, server


@contextlib.contextmanager
def client_of(api: str):
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}):
        with get_client(sync_client=True) as client:
            yield client


def drain_log_and_event_workers() -> None:
    """Send this process's buffered flow-run logs and events while the server is still up
    (as prefect_test_harness does); otherwise they retry against a stopped server at exit."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(RuntimeError):  # never started
        APILogWorker.instance().drain()
    EventsWorker.drain_all()


def runs_of(client, deployment_id):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    # sort and limit explicitly: the server answers 422 to the nulls the sync client sends by default
    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                                 sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=50)


# ---------------------------------------------------------------- against a real server


@pytest.mark.slow
def test_scheduled_run_completes_and_an_overlapping_run_is_cancelled(tiny_project, tmp_path):
    """The real deployment, every minute: the scheduler creates a run, `python -m flows.deploy`
    runs the real pipeline to COMPLETED, and a run triggered meanwhile is cancelled (CANCEL_NEW)."""
    with prefect_server(tmp_path) as (api, env, server):
        env.update(PREFECT_RUNNER_POLL_FREQUENCY="2", PIPELINE_FAILURE_LOG=str(tmp_path / "failures.log"))
        serving = Server([sys.executable, "-m", "flows.deploy", "--cron", "* * * * *", "--timeout", "600"],
                         tmp_path / "serve.log", env=env, cwd=tiny_project)
        logs = (serving.log, server.log)
        try:
            with client_of(api) as client:
                def deployment():
                    assert serving.proc.poll() is None, f"flows.deploy exited:\n{tail(serving.log)}"
                    with contextlib.suppress(Exception):
                        return client.read_deployment_by_name(DEPLOYMENT)
                dep = wait_for("the deployment", deployment, timeout=90, logs=logs)
                assert [s.schedule.cron for s in dep.schedules] == ["* * * * *"]
                assert dep.global_concurrency_limit.limit == 1
                assert dep.concurrency_options.collision_strategy.value == "CANCEL_NEW"

                # A run created by the server's scheduler (not by us) starts on the minute.
                def scheduled_running():
                    return next((r for r in runs_of(client, dep.id) if r.auto_scheduled and r.state.is_running()), None)
                first = wait_for("a scheduled run to start", scheduled_running, timeout=150, logs=logs)

                # While it runs, a second run of the deployment is refused by the concurrency limit.
                second = client.create_flow_run_from_deployment(dep.id)
                second = wait_for("the second run to be refused",
                                  lambda: (r := client.read_flow_run(second.id)).state.is_final() and r,
                                  timeout=60, every=0.5, logs=logs)
                assert second.state.is_cancelled(), second.state
                assert "concurrency limit" in second.state.message
                assert client.read_flow_run(first.id).state.is_running()  # the refusal came while it ran

                first = wait_for("the scheduled run to finish",
                                 lambda: (r := client.read_flow_run(first.id)).state.is_final() and r,
                                 timeout=150, logs=logs)
                assert first.state.is_completed(), f"{first.state}\n{tail(serving.log)}"
                assert first.run_count == 1
                assert first.empirical_policy.retries == 2  # the served flow carries the deployment's policy
        finally:
            serving.stop()
        assert not group_members(serving.pgid), group_members(serving.pgid)
        # No scheduler error (SQLAlchemy 2.1: "Can't evaluate bulk DML statement"), no telemetry error.
        server_log = server.log.read_text(errors="replace")  # before the server's own shutdown
        assert "Traceback" not in server_log and "ERROR" not in server_log, tail(server.log)

    assert not group_members(server.pgid), group_members(server.pgid)
    # The real pipeline ran in the project: the last stage's outputs are there; nothing failed.
    assert json.loads((tiny_project / "reports" / "metrics.json").read_text())["macro_f1"] > 0
    assert not (tmp_path / "failures.log").exists()


TIMEOUT_S = 40  # long enough to reach pretraining on a loaded 2-core machine


@pytest.mark.slow
def test_only_transient_errors_are_retried(tiny_project, tmp_path, monkeypatch, set_params):
    """The real flow with the deployment's retries, against a real server's retry rule."""
    from prefect.states import StateType

    from flows.deploy import nightly_retraining

    failures = tmp_path / "failures.log"
    monkeypatch.setenv(tp.FAILURE_LOG_ENV, str(failures))
    flow = nightly_retraining(retries=1, retry_delay=1).served_flow()
    with prefect_server(tmp_path) as (api, env, server), client_of(api) as client:
        try:
            # A user error (a missing params file): Failed after one attempt, not retried.
            state = flow(params="missing.yaml", return_state=True)
            run = client.read_flow_run(state.state_details.flow_run_id)
            assert run.state.type == StateType.FAILED and run.run_count == 1
            assert "ConfigError" in run.state.message

            # A transient error (MLflow's server refuses the connection): retried once, then Failed.
            monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
            state = flow(params="params.yaml", return_state=True)
            run = client.read_flow_run(state.state_details.flow_run_id)
            assert run.state.type == StateType.FAILED and run.run_count == 2
            assert "API request to" in run.state.message
            transient_run_id = run.id

            # The timeout (shorter than the pipeline here): TimedOut after one attempt, not retried.
            # It fires inside a pretraining of minutes (our training loop), not during the first
            # seconds of DVC and MLflow set-up, whose broad except clauses can swallow the alarm.
            monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_project / 'mlflow.db'}")
            set_params(pretrain={"epochs": 1000})
            state = nightly_retraining(retries=1, retry_delay=1, timeout=TIMEOUT_S).served_flow()(
                params="params.yaml", return_state=True)
            run = client.read_flow_run(state.state_details.flow_run_id)
            assert run.state.name == "TimedOut" and run.state.type == StateType.FAILED and run.run_count == 1
        finally:
            drain_log_and_event_workers()
    assert not group_members(server.pgid), group_members(server.pgid)

    # The on_failure hook wrote one line per failed run (not per attempt).
    lines = failures.read_text().splitlines()
    assert len(lines) == 3, lines
    assert "state=Failed" in lines[0] and "missing.yaml" in lines[0] and "ConfigError" in lines[0]
    assert f"id={transient_run_id} state=Failed" in lines[1]
    assert f"state=TimedOut message=Flow run exceeded timeout of {TIMEOUT_S:.1f} second(s)" in lines[2]


# ---------------------------------------------------------------- the hook and the classifier alone


class Webhook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Webhook.received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def fake_failure():
    flow = SimpleNamespace(name="training-pipeline")
    flow_run = SimpleNamespace(name="brave-otter", id="0190c0de-0000-7000-8000-000000000001")
    state = SimpleNamespace(name="Failed", message="Flow run encountered an exception: ConfigError: bad\nkey")
    return flow, flow_run, state


def test_failure_hook_appends_a_line_and_posts_json(tmp_path, monkeypatch):
    server = http.server.HTTPServer(("127.0.0.1", 0), Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Webhook.received = []
    log = tmp_path / "logs" / "failures.log"
    monkeypatch.setenv(tp.FAILURE_LOG_ENV, str(log))
    monkeypatch.setenv(tp.FAILURE_WEBHOOK_ENV, f"http://127.0.0.1:{server.server_port}/hook")
    try:
        tp.notify_failure(*fake_failure())
        tp.notify_failure(*fake_failure())
    finally:
        server.shutdown()
        server.server_close()
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    assert "training-pipeline run=brave-otter id=0190c0de-0000-7000-8000-000000000001 state=Failed" in lines[0]
    assert lines[0].endswith("message=Flow run encountered an exception: ConfigError: bad key")
    content_type, record = Webhook.received[0]
    assert content_type == "application/json" and len(Webhook.received) == 2
    assert record["flow_run"] == "brave-otter" and record["state"] == "Failed" and "ConfigError" in record["message"]


def test_failure_hook_never_raises(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv(tp.FAILURE_LOG_ENV, str(blocker / "failures.log"))  # cannot be created
    monkeypatch.setenv(tp.FAILURE_WEBHOOK_ENV, f"http://127.0.0.1:{free_port()}/hook")  # refused
    tp.notify_failure(*fake_failure())
    err = capsys.readouterr().err
    assert "could not write the failure log" in err and "failure webhook" in err


def test_failure_log_defaults_to_logs_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(tp.FAILURE_LOG_ENV, raising=False)
    monkeypatch.delenv(tp.FAILURE_WEBHOOK_ENV, raising=False)
    tp.notify_failure(*fake_failure())
    assert "run=brave-otter" in (tmp_path / "logs" / "failures.log").read_text()


def raised(exc: BaseException, inside: BaseException | None = None) -> BaseException:
    """`exc` as Python leaves it when raised while handling `inside` (MLflow's REST errors are)."""
    try:
        try:
            raise inside if inside is not None else RuntimeError("no context")
        except BaseException:
            raise exc from None
    except BaseException as err:
        return err


def test_only_connection_failures_are_transient():
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2
    from prefect.flow_engine import FlowRunTimeoutError

    refused = requests.exceptions.ConnectionError("Max retries exceeded: Connection refused")
    assert tp.is_transient(raised(MlflowException("API request to http://mlflow/api failed"), refused))
    assert tp.is_transient(ConnectionRefusedError(111, "Connection refused"))
    assert tp.is_transient(sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("could not connect to server")))
    assert tp.is_transient(MlflowException("busy", error_code=databricks_pb2.TEMPORARILY_UNAVAILABLE))

    assert not tp.is_transient(ConfigError("params.yaml: no such file"))
    assert not tp.is_transient(raised(RuntimeError("stage failed"), ConfigError("bad column")))
    assert not tp.is_transient(raised(ConfigError("bad column"), refused))  # a user error wins
    assert not tp.is_transient(FlowRunTimeoutError("Scope timed out after 600 second(s)."))
    assert not tp.is_transient(ValueError("a bug"))
    assert not tp.is_transient(MlflowException("bad", error_code=databricks_pb2.INVALID_PARAMETER_VALUE))
