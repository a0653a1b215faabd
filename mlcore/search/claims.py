"""Claiming trials under a budget: ask/tell under a file lock (and a PostgreSQL advisory lock
across machines), so parallel workers never overshoot `n_trials`; and running a claimed
trial, with its heartbeat on an RDB storage. Every search path (the stage's own loop, worker
processes, a Prefect process pool) claims with `claim_trial` and runs with `run_claimed`."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from mlcore import liveness
from mlcore.search.studies import StudyHandle


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
def _database_lock(h: StudyHandle):
    """On PostgreSQL, an advisory lock per study: workers on other machines, which do not
    share the file lock, claim one at a time too. A no-op for other storages."""
    engine = h.storage.engine if isinstance(h.storage, RDBStorage) else None
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    from sqlalchemy import text

    key = int.from_bytes(hashlib.sha256(f"optuna-claim:{h.study.study_name}".encode()).digest()[:8], "big", signed=True)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


def claim_trial(h: StudyHandle, n_trials: int, lock: Path, sample=None, beats_here: bool = True
                ) -> optuna.Trial | None:
    """A new trial, or None once finished + running trials reach the budget. The count and
    the ask happen under one lock (a file lock on this machine, plus an advisory lock on
    PostgreSQL across machines), so parallel workers never overshoot the budget.
    `beats_here`: this process runs the trial, so it beats once now. Optuna never fails a
    RUNNING trial that has no heartbeat, so a worker killed between its claim and its trial's
    first beat would leave a trial the budget waits for forever. A pool's dispatcher, whose
    trial starts when a pool process is free, passes False."""
    with locked(lock), _database_lock(h):
        if h.heartbeat_interval is not None:
            optuna.storages.fail_stale_trials(h.study)  # silent workers on any machine: FAIL, then retried
        trials = h.study.get_trials(deepcopy=False)
        taken = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for t in trials)
        if taken >= n_trials:
            return None
        trial = h.study.ask()
        # The claimer owns it until the process that runs it records itself (a pool process).
        if beats_here and h.heartbeat_interval is not None:
            h.storage.record_heartbeat(h.trial_id(trial.number))
        trial.set_user_attr("owner", liveness.owner())
        if sample is not None:
            sample(trial)  # draw its parameters here, with this process's sampler (they are stored)
        return trial


def claimed(h: StudyHandle, number: int) -> optuna.Trial:
    """Trial `number`, claimed by another process, to run in this one (a pool process)."""
    return optuna.Trial(h.study, h.trial_id(number))


@contextlib.contextmanager
def _heartbeat(h: StudyHandle, trial: optuna.Trial):
    """Beat for `trial` every `search.heartbeat_interval` seconds while it runs, on an RDB
    storage with a heartbeat: ask/tell does not beat on its own, as study.optimize does. A
    beat that fails (the database restarting, say) is retried at the next one, so one lost
    connection does not leave a live trial to be failed as stale."""
    interval = h.heartbeat_interval
    if interval is None:
        yield
        return
    trial_id, stop = h.trial_id(trial.number), threading.Event()

    def beat() -> None:
        while True:
            try:
                h.storage.record_heartbeat(trial_id)
            except Exception as err:  # noqa: BLE001 - the next beat tries again
                print(f"warning: heartbeat of trial {trial.number} failed: {err}")
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-trial-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_claimed(h: StudyHandle, trial: optuna.Trial, objective) -> TrialState:
    """Run one claimed trial and record its outcome. A diverging trial (FloatingPointError)
    fails alone; anything else fails it and is raised."""
    try:
        with _heartbeat(h, trial):
            value = objective(trial)
    except optuna.TrialPruned:
        h.study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    except FloatingPointError:
        h.study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    except BaseException:
        h.study.tell(trial, state=TrialState.FAIL)
        raise
    h.study.tell(trial, value)
    return TrialState.COMPLETE


def run_here(h: StudyHandle, objective) -> Callable[[optuna.Trial], TrialState]:
    """`run_trials`' `run` for a process that trains: each claimed trial runs here."""
    return lambda trial: run_claimed(h, trial, objective)


def run_trials(h: StudyHandle, n_trials: int, lock: Path, run: Callable[[optuna.Trial], object],
               sample=None, stop: Callable[[], bool] = lambda: False, beats_here: bool = True) -> int:
    """One worker's loop (ask/tell): claim a trial and have `run` run and record it, until the
    budget is taken or `stop()`. `run` is `run_here(...)`, or a pool's hand-over of the
    trial to a pool process, which runs it with `run_claimed` there (`beats_here` False: see
    `claim_trial`). Returns the trials claimed."""
    ran = 0
    while not stop() and (trial := claim_trial(h, n_trials, lock, sample, beats_here)) is not None:
        ran += 1
        run(trial)
    return ran
