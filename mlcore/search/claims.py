"""Claiming trials under a budget: ask/tell under a file lock (and a PostgreSQL advisory lock
across machines), so parallel workers never overshoot `n_trials`."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
from pathlib import Path

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import TrialState

from mlcore import liveness


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _database_lock(study: optuna.Study):
    """On PostgreSQL, an advisory lock per study: workers on other machines, which do not
    share the file lock, claim one at a time too. A no-op for other storages."""
    storage = getattr(study._storage, "_backend", study._storage)  # Optuna caches RDBStorage
    engine = getattr(storage, "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    from sqlalchemy import text

    key = int.from_bytes(hashlib.sha256(f"optuna-claim:{study.study_name}".encode()).digest()[:8], "big", signed=True)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


def claim_trial(study: optuna.Study, n_trials: int, lock: Path, sample=None) -> optuna.Trial | None:
    """A new trial, or None once finished + running trials reach the budget. The count and
    the ask happen under one lock (a file lock on this machine, plus an advisory lock on
    PostgreSQL across machines), so parallel workers never overshoot the budget."""
    with locked(lock), _database_lock(study):
        if is_heartbeat_enabled(study._storage):
            optuna.storages.fail_stale_trials(study)  # silent workers on any machine: FAIL, then retried
        trials = study.get_trials(deepcopy=False)
        taken = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for t in trials)
        if taken >= n_trials:
            return None
        trial = study.ask()
        # The claimer owns it until the process that runs it records itself (a pool process).
        trial.set_user_attr("owner", liveness.owner())
        if sample is not None:
            sample(trial)  # draw its parameters here, with this process's sampler (they are stored)
        return trial


def run_claimed(study: optuna.Study, trial: optuna.Trial, objective) -> TrialState:
    """Run one claimed trial and record its outcome. A diverging trial (FloatingPointError)
    fails alone; anything else fails it and is raised."""
    # ask/tell does not beat on its own, as study.optimize does; Optuna's helper is a
    # no-op for storages without a heartbeat (JournalFile).
    try:
        with get_heartbeat_thread(trial._trial_id, study._storage):
            value = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    except FloatingPointError:
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    study.tell(trial, value)
    return TrialState.COMPLETE


def run_trials(study: optuna.Study, objective, n_trials: int, lock: Path) -> int:
    """One worker's loop (ask/tell): claim, run and record trials until the budget is taken."""
    ran = 0
    while (trial := claim_trial(study, n_trials, lock)) is not None:
        ran += 1
        run_claimed(study, trial, objective)
    return ran
