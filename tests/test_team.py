"""The team's servers (`python -m team`): the whole life on real servers (PostgreSQL from Debian's
binaries, `mlflow server`, `prefect server start`) on free loopback ports in a temporary state
directory, and the one-paragraph errors, which need no server."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from argparse import Namespace
from pathlib import Path

import pytest

from mlcore.errors import UserError
from team import postgres
from team.__main__ import main
from team.processes import start, wait_until_answers
from team.settings import resolve
from tests.conftest import ROOT
from tests.servers import free_port, group_members

CLIENT_VARIABLES = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "OPTUNA_STORAGE")
needs_postgres = pytest.mark.skipif(postgres.find_server_binaries() is None,
                                    reason=f"PostgreSQL server binaries not installed ({postgres.INSTALL})")


def _team(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "team", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=400)


def _exports(stdout: str) -> dict[str, str]:
    """`export NAME=value` lines as a dict (the values need no shell quoting)."""
    return dict(line.removeprefix("export ").split("=", 1) for line in stdout.splitlines())


@pytest.fixture
def team_env():
    # Not under pytest's tmp_path: every pytest session makes /tmp/pytest-of-<user> private (0700)
    # again as it starts, which would lock the postgres user (the server's, under root) out mid-test.
    top = Path(tempfile.mkdtemp(prefix="test-team-"))
    top.chmod(0o711)
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
    env.update(TEAM_DIR=str(top / "state"), TEAM_POSTGRES_PORT=str(free_port()),
               TEAM_MLFLOW_PORT=str(free_port()), TEAM_PREFECT_PORT=str(free_port()),
               TEAM_MLFLOW_WORKERS="1")  # one worker starts faster on 2 cores
    yield env
    _team("down", "--purge", env=env)  # whatever a failed assertion left running
    shutil.rmtree(top, ignore_errors=True)


def _groups(state: Path) -> list[int]:
    """The process groups of the three servers (pg_ctl starts PostgreSQL in a session of its own)."""
    pids = [int(json.loads((state / f"{name}.pid.json").read_text())["pgid"]) for name in ("mlflow", "prefect")]
    return [*pids, int((state / "postgres" / "data" / "postmaster.pid").read_text().split()[0])]


def _log_a_run(tracking_uri: str, monkeypatch) -> str:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)  # the way the pipeline is pointed at the server
    client = mlflow.MlflowClient()
    run = client.create_run(client.create_experiment("team-check"))
    for step, loss in enumerate([0.9, 0.5, 0.25]):
        client.log_metric(run.info.run_id, "loss", loss, step=step)
    client.log_text(run.info.run_id, "proxied through the server", "note.txt")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _metrics_in_postgres(settings, run_id: str) -> list[float]:
    import psycopg2

    with contextlib.closing(psycopg2.connect(postgres.url(settings, "mlflow", driver=None))) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT value FROM metrics WHERE run_uuid = %s AND key = 'loss' ORDER BY step", (run_id,))
            return [row[0] for row in cursor.fetchall()]


@pytest.mark.slow
@needs_postgres
def test_up_serves_the_three_down_stops_them_and_the_data_outlives_a_restart(team_env, monkeypatch):
    import mlflow
    import optuna

    state = Path(team_env["TEAM_DIR"])
    settings = resolve(Namespace(), team_env)
    up = _team("up", env=team_env)
    assert up.returncode == 0, up.stderr
    exports = _exports(up.stdout)
    assert set(exports) == set(CLIENT_VARIABLES)
    assert _team("env", env=team_env).stdout == up.stdout

    run_id = _log_a_run(exports["MLFLOW_TRACKING_URI"], monkeypatch)
    assert _metrics_in_postgres(settings, run_id) == [0.9, 0.5, 0.25]
    uploaded = list((state / "mlflow-artifacts").rglob("note.txt"))  # stored by the server, not the client
    assert [f.read_text() for f in uploaded] == ["proxied through the server"]
    with urllib.request.urlopen(f"{exports['PREFECT_API_URL']}/health", timeout=10) as response:
        assert json.load(response) is True
    optuna.create_study(storage=exports["OPTUNA_STORAGE"], study_name="team-check")
    assert optuna.get_all_study_names(exports["OPTUNA_STORAGE"]) == ["team-check"]

    groups = _groups(state)
    again = _team("up", env=team_env)
    assert again.returncode == 0 and again.stderr.count("already up") == 3, again.stderr
    assert _groups(state) == groups
    assert _team("status", env=team_env).returncode == 0

    down = _team("down", env=team_env)
    assert down.returncode == 0, down.stderr
    assert not [member for group in groups for member in group_members(group)]
    assert _team("status", env=team_env).returncode == 3

    assert _team("up", env=team_env).returncode == 0
    assert mlflow.MlflowClient().get_experiment_by_name("team-check") is not None
    assert _metrics_in_postgres(settings, run_id) == [0.9, 0.5, 0.25]
    assert optuna.get_all_study_names(exports["OPTUNA_STORAGE"]) == ["team-check"]

    groups = _groups(state)
    assert _team("down", "--purge", env=team_env).returncode == 0
    assert not [member for group in groups for member in group_members(group)]
    assert not state.exists()


def test_without_postgresql_up_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(postgres, "find_server_binaries", lambda: None)
    assert main(["up", "--dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "apt-get install postgresql" in error and "Traceback" not in error
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


@needs_postgres
def test_a_taken_port_is_refused_before_anything_starts(tmp_path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["up", "--dir", str(tmp_path / "state"), "--mlflow-port", str(port),
                     "--postgres-port", str(free_port()), "--prefect-port", str(free_port())]) == 2
    error = capsys.readouterr().err
    assert f"Port {port} on 127.0.0.1 is taken" in error and "--mlflow-port (TEAM_MLFLOW_PORT)" in error
    assert not (tmp_path / "state").exists()


def test_a_server_that_exits_before_it_answers_is_reported_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    proc = start([sys.executable, "-c", "print('cannot bind'); raise SystemExit(3)"], log, dict(os.environ))
    with pytest.raises(UserError) as error:
        wait_until_answers("mlflow", proc, f"http://127.0.0.1:{free_port()}/health", log, timeout=60)
    assert "exited with status 3" in str(error.value) and str(log) in str(error.value)
    assert "cannot bind" in str(error.value)


def test_env_and_status_before_any_up_say_how_to_start(tmp_path, capsys):
    assert main(["env", "--dir", str(tmp_path)]) == 2
    assert main(["status", "--dir", str(tmp_path)]) == 3
    assert "python -m team up" in capsys.readouterr().err


def test_a_flag_beats_its_variable_which_beats_the_default(tmp_path):
    flags = Namespace(mlflow_port=5055, prefect_port=None)
    settings = resolve(flags, {"TEAM_MLFLOW_PORT": "6000", "TEAM_PREFECT_PORT": "6001", "TEAM_DIR": str(tmp_path)})
    assert (settings.mlflow_port, settings.prefect_port, settings.postgres_port) == (5055, 6001, 5433)
    assert settings.dir == tmp_path and settings.host == "127.0.0.1"
    with pytest.raises(UserError, match="TEAM_MLFLOW_PORT"):
        resolve(Namespace(), {"TEAM_MLFLOW_PORT": "five thousand"})
    with pytest.raises(UserError, match="three different ports"):
        resolve(Namespace(), {"TEAM_MLFLOW_PORT": "4200"})


def test_a_pid_record_of_another_machine_is_never_signalled(tmp_path):
    from team.processes import load

    record = tmp_path / "mlflow.pid.json"
    record.write_text(json.dumps({"host": "elsewhere", "pid": "1", "start": "1", "pgid": 1, "url": "http://x"}))
    with pytest.raises(UserError, match="started on elsewhere"):
        load(record)
