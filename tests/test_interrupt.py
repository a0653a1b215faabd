"""A stage stopped from outside (SIGTERM) closes its MLflow runs as FAILED, never leaves them RUNNING."""
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlcore.config import load_config
from tasks._context import stage_context

# Seeds the SIGKILL delay below, so that a failure reproduces: set TEST_SIGKILL_SEED to try another.
SIGKILL_DELAY_SEED = int(os.environ.get("TEST_SIGKILL_SEED", "1"))

pytestmark = pytest.mark.slow  # real stages in subprocesses, stopped from outside


def spawn(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    """Start a stage with its stderr in a file, never a pipe: a pipe that nobody reads until
    the end fills up (64 KB of logs), blocks the child's next write, and a SIGTERM'd child
    that logs while it unwinds then hangs forever. `proc.errors()` reads what it wrote."""
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True, env=env)
    proc.errors = lambda: (log.seek(0), log.read())[1][-2000:]
    return proc


def children(pid: int, marker: str) -> list[int]:
    """The live child processes of `pid` whose command line contains `marker` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue  # ended while being read
        if ppid == pid and marker in cmdline:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def sigterm_once_trials_run(cmd: list[str], run_name: str, n_running: int, timeout: float, servers: list | None = None):
    """Start `cmd`, wait until `n_running` MLflow trial runs whose name matches `run_name`
    are RUNNING, send SIGTERM and wait for the exit. Returns (process, experiment, client).
    `servers`, when given, receives the pids of the run's ephemeral Prefect API servers."""
    proc = spawn(cmd)
    client, exp = MlflowClient(), None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            exp = client.get_experiment_by_name("tests")
            running = f"attributes.status = 'RUNNING' and attributes.run_name {run_name}"
            if exp and len(client.search_runs([exp.experiment_id], running)) >= n_running:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.errors()
        if servers is not None:
            servers += children(proc.pid, "prefect.server.api.server")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, exp, client


def test_sigterm_during_search_marks_runs_failed(tiny_project, set_params):
    from tasks import prepare, pretrain

    cfg = load_config()
    prepare.run(stage_context(cfg))
    pretrain.run(stage_context(cfg))
    set_params(search={"n_trials": 2, "epochs": 500})  # trial 0 alone runs for minutes

    proc, exp, client = sigterm_once_trials_run([sys.executable, "-m", "tasks.search"], "= 'trial-0'", 1, 180)
    assert proc.returncode == 128 + signal.SIGTERM

    statuses = {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id])}
    assert statuses["search"] == "FAILED" and statuses["trial-0"] == "FAILED"
    assert "RUNNING" not in statuses.values(), statuses


def kill_after_first_checkpoint(stage: str, state: Path, timeout: float = 180) -> int:
    """Run `python -m tasks.<stage>`, kill -9 it once its checkpoint's `state` file exists, and return
    the epoch that checkpoint saved."""
    import json

    proc = spawn([sys.executable, "-m", f"tasks.{stage}"])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None and not state.is_file():
            time.sleep(0.05)
        assert proc.poll() is None, f"{stage} ended before its first checkpoint: " + proc.errors()
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return json.loads(state.read_text())["train"]["epoch"]


def test_finetune_killed_mid_run_resumes_from_its_last_checkpoint(tiny_project, set_params):
    """kill -9 after an epoch's checkpoint: the rerun starts after that epoch, not from scratch."""
    import json
    from pathlib import Path

    from tasks import prepare, pretrain, search

    cfg = load_config()
    prepare.run(stage_context(cfg))
    pretrain.run(stage_context(cfg))
    search.run(stage_context(cfg))
    set_params(finetune={"epochs": 3, "patience": 3, "batch_size": 2})  # a few seconds per epoch
    state = Path(".checkpoints/finetune/state.json")

    saved_epoch = kill_after_first_checkpoint("finetune", state)
    assert 1 <= saved_epoch < 3

    done = subprocess.run([sys.executable, "-m", "tasks.finetune"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(Path("reports/finetune.json").read_text())
    assert report["resumed_from_epoch"] == saved_epoch
    assert report["epochs_run"] == 3  # the history carries the epochs from before the kill
    assert "resuming from the checkpoint" in done.stdout
    assert not Path(".checkpoints/finetune").exists()  # cleared once the outputs are saved


def test_search_killed_with_sigkill_finishes_its_budget_on_rerun(tiny_project, set_params):
    """kill -9 mid-trial: the rerun fails and retries the dead trial with its parameters,
    closes the dead process's MLflow runs, and ends with exactly n_trials finished."""
    import json
    import random

    import optuna
    import pandas as pd

    from mlcore.search import studies
    from tasks import _paths as P
    from tasks import prepare, pretrain

    cfg = load_config()
    prepare.run(stage_context(cfg))
    pretrain.run(stage_context(cfg))
    set_params(search={"n_trials": 3, "epochs": 6, "batch_size": 4})  # several seconds per trial
    client = MlflowClient()

    proc = spawn([sys.executable, "-m", "tasks.search"])
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            exp = client.get_experiment_by_name("tests")
            if exp and client.search_runs(
                    [exp.experiment_id], "attributes.status = 'RUNNING' and attributes.run_name LIKE 'trial-%'"):
                break
            time.sleep(0.2)
        delay = random.Random(SIGKILL_DELAY_SEED).uniform(0.0, 2.0)  # somewhere inside the first trial
        print(f"SIGKILL {delay:.3f} s after the first trial started (seed {SIGKILL_DELAY_SEED})")
        time.sleep(delay)
        assert proc.poll() is None, proc.errors()
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    done = subprocess.run([sys.executable, "-m", "tasks.search"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "died were failed and queued again" in done.stdout

    cfg = load_config()
    name = json.loads(P.BEST_PARAMS.read_text())["study"]
    study = optuna.load_study(study_name=name, storage=studies.make_storage(None, P.OPTUNA_DIR, cfg.search.study_name))
    states = [t.state for t in study.trials]
    assert studies.finished_trials(study) == 3  # the budget, neither restarted nor overshot
    assert optuna.trial.TrialState.RUNNING not in states
    retried = [t for t in study.trials if "retry_of" in t.user_attrs]
    assert len(retried) == 1
    dead = study.trials[retried[0].user_attrs["retry_of"]]
    assert dead.state == optuna.trial.TrialState.FAIL and retried[0].params == dead.params
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    table = pd.read_csv(P.SEARCH_TRIALS)
    assert (table["state"] == "FAIL").sum() == 1
    best = studies.best_trial(study, cfg.search.tie_tolerance).number
    assert json.loads((P.BEST_TRIAL_MODEL / "trial.json").read_text())["trial"] == best


POOLED_SEARCH = """
from prefect import flow
from mlcore.config import load_config
from tasks import search
from tasks._process import exit_on_sigterm
from tasks._context import stage_context

exit_on_sigterm()  # as flows.training_pipeline does: SIGTERM unwinds, so the ephemeral server stops at exit

@flow(name="pooled-search")
def pooled():
    search.run(stage_context(load_config()))

pooled()
"""


def test_sigterm_during_a_pooled_search_in_the_flow_fails_its_trials(tiny_project, set_params):
    """Inside the flow with search.workers: 2, SIGTERM stops the pool at once (no waiting
    for running trials), no trial or MLflow run is left RUNNING, and the flow's ephemeral
    Prefect API server goes down with it (it used to be orphaned)."""
    import optuna

    from mlcore.search import studies
    from tasks import _paths as P
    from tasks import prepare, pretrain
    from tasks._search.trials import inputs_digest

    cfg = load_config()
    prepare.run(stage_context(cfg))
    pretrain.run(stage_context(cfg))
    set_params(search={"n_trials": 4, "workers": 2, "epochs": 500})  # trials that run for minutes

    servers: list[int] = []
    proc, exp, client = sigterm_once_trials_run([sys.executable, "-c", POOLED_SEARCH], "LIKE 'trial-%'", 2, 240,
                                                servers)
    assert proc.returncode != 0
    assert servers, "the flow's ephemeral API server was not found among the run's children"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(pid) for pid in servers):
        time.sleep(0.2)
    leftover = [pid for pid in servers if alive(pid)]
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)  # never leave it behind, even when the assertion fails
    assert not leftover, f"the ephemeral Prefect API server {leftover} outlived its SIGTERM'd run"

    statuses = {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id])}
    assert statuses["trial-0"] == statuses["trial-1"] == "FAILED", statuses
    assert "RUNNING" not in statuses.values(), statuses
    name = studies.study_name(load_config().search, inputs_digest())
    study = optuna.load_study(study_name=name, storage=studies.make_storage(None, P.OPTUNA_DIR, cfg.search.study_name))
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]


def test_from_scratch_pretrain_killed_mid_run_resumes_onto_the_same_vocabulary(tiny_project, set_params):
    """kill -9 after an epoch's checkpoint; the rerun, in a process with another hash seed,
    learns the same WordPiece vocabulary again (no cached copy), so the checkpoint's
    fingerprint matches and it resumes after that epoch."""
    import json
    import os
    from pathlib import Path

    from tasks import prepare

    prepare.run(stage_context(load_config()))
    set_params(pretrain={"epochs": 2, "batch_size": 4})  # a few seconds per epoch
    state = Path(".checkpoints/pretrain/state.json")

    proc = spawn([sys.executable, "-m", "tasks.pretrain"], env={**os.environ, "PYTHONHASHSEED": "1"})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and not state.is_file():
            time.sleep(0.05)
        assert proc.poll() is None, "pretrain ended before its first checkpoint: " + proc.errors()
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved_epoch = json.loads(state.read_text())["train"]["epoch"]
    assert saved_epoch == 1

    done = subprocess.run([sys.executable, "-m", "tasks.pretrain"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONHASHSEED": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(Path("reports/pretrain.json").read_text())["resumed_from_epoch"] == saved_epoch
    assert "resuming from the checkpoint" in done.stdout
    assert not Path(".checkpoints").exists() or not any(Path(".checkpoints").iterdir())
