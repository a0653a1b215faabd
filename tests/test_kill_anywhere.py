"""kill -9 of the whole process group at seeded points of a run, then a plain rerun: the rerun
completes, and nothing is left half-done: a clean `dvc status`, no MLflow run, Prefect flow or
task run, or Optuna trial left RUNNING, no trial beyond the budget, and exactly one registered
version per completed register stage."""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# Where to kill: after the flow's log shows `marker`, wait a seeded delay from `window` (s).
KILL_POINTS = [
    ("during the Prefect server's start", "Starting temporary server", (0.0, 1.0)),
    ("in prepare", "prepare runs:", (0.0, 0.4)),
    ("in pretrain", "pretrain runs:", (0.3, 1.5)),
    ("right after a stage's end", "Task run 'search' - Finished in state", (0.0, 0.05)),
    ("in finetune", "finetune runs:", (0.5, 3.0)),
    ("in register", "register runs:", (0.0, 1.5)),
]


def wait_for(log: Path, marker: str, proc: subprocess.Popen, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in log.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    raise AssertionError(f"{marker!r} not seen in {timeout} s:\n{log.read_text()[-3000:]}")


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchone()[0]


def test_kill_at_seeded_points_then_a_plain_rerun_leaves_nothing_half_done(tiny_project, tmp_path, set_params):
    rng = random.Random(1234)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}  # its own Prefect database
    flow = [sys.executable, "-m", "flows.training_pipeline"]
    for round_, (where, marker, window) in enumerate(KILL_POINTS):
        set_params(prepare={"seed": 100 + round_})  # new splits: every stage has work to do
        log = tmp_path / f"killed-{round_}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(flow, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        reached = wait_for(log, marker, proc)
        delay = rng.uniform(*window)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the flow, its Prefect server, any workers
        proc.wait()
        assert reached, f"the run ended before {where}:\n{log.read_text()[-3000:]}"

        rerun = subprocess.run(flow, capture_output=True, text=True, env=env, timeout=600)
        context = f"killed {where} ({delay:.2f} s after {marker!r}); rerun:\n{rerun.stderr[-3000:]}"
        assert rerun.returncode == 0, context

        status = subprocess.run(["dvc", "status"], capture_output=True, text=True, env=env).stdout
        assert "Data and pipelines are up to date" in status, f"{context}\n{status}"
        assert count(tiny_project / "mlflow.db", "SELECT count(*) FROM runs WHERE status = 'RUNNING'") == 0, context
        prefect_db = tmp_path / "prefect-home" / "prefect.db"
        for table in ("flow_run", "task_run"):
            assert count(prefect_db, f"SELECT count(*) FROM {table} WHERE state_type = 'RUNNING'") == 0, context
        for journal in (tiny_project / "optuna").glob("*.journal"):
            storage = JournalStorage(JournalFileBackend(str(journal)))
            for summary in optuna.get_all_study_summaries(storage):
                trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
                assert not [t for t in trials if t.state == TrialState.RUNNING], context
                done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
                assert len(done) <= 2, context  # the tiny search's budget (n_trials: 2)
        # Each round's new splits give one new model, and exactly one register stage completes
        # for it: in the killed run or in the rerun (which reuses a version the killed one made).
        versions = count(tiny_project / "mlflow.db", "SELECT count(*) FROM model_versions")
        assert versions == round_ + 1, f"{versions} versions after {round_ + 1} rounds. {context}"
