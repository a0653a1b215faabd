"""The Optuna study: sampler, pruner, storage, identity, budget, and the reaping of dead trials."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

from mlcore import liveness
from mlcore.config import SearchConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# Each claimed trial beats on its own thread (claims.run_claimed), as study.optimize's would.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

# Settings that do not change what a trial means: n_trials is a budget, tie_tolerance picks among
# finished trials, the rest is plumbing.
_NOT_IDENTITY = ("n_trials", "tie_tolerance", "storage", "study_name", "resume", "num_workers", "workers",
                 "heartbeat_interval", "grace_period", "engine")


@dataclass(frozen=True)
class StudyHandle:
    """A study with the storage we built for it. Optuna keeps an RDBStorage only behind a
    cache of its own, so the heartbeat and the claim's advisory lock use this one."""
    study: optuna.Study
    storage: BaseStorage
    study_id: int

    @classmethod
    def of(cls, study: optuna.Study, storage: BaseStorage) -> StudyHandle:
        """`study`, created or loaded on `storage`."""
        return cls(study, storage, storage.get_study_id_from_name(study.study_name))

    @property
    def heartbeat_interval(self) -> int | None:
        """Seconds between a running trial's heartbeats; None where the storage has no heartbeat."""
        return self.storage.get_heartbeat_interval() if isinstance(self.storage, RDBStorage) else None

    def trial_id(self, number: int) -> int:
        """The storage's id of trial `number` (what heartbeats and `optuna.Trial` take)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)


class GridWithinBudget(optuna.samplers.GridSampler):
    """Optuna's grid sampler, less its stop: after the last grid point's result it calls
    `study.stop()`, which raises outside `study.optimize`, so under ask/tell the search stage
    failed at its last trial (stored COMPLETE all the same). The claim loop already ends at
    search.n_trials."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_sampler(cfg: SearchConfig, worker: int = 0) -> optuna.samplers.BaseSampler:
    """`worker` offsets the seed: parallel workers with one seed would draw the same
    random start-up trials and run each of them twice."""
    seed = cfg.seed + worker
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.sampler == "grid":
        return GridWithinBudget(dict(cfg.grid), seed=seed)
    # Few trials: start TPE after 3 random ones rather than Optuna's default 10.
    # group=True: the learning rate's range depends on the optimizer (a conditional space).
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=min(3, cfg.n_trials))


def make_pruner(cfg: SearchConfig) -> optuna.pruners.BasePruner:
    """Trials report validation macro-F1 at each evaluation (each epoch, or every
    `eval_every_steps` optimizer steps): evaluations are the pruners' resource."""
    if cfg.pruner == "none":
        return optuna.pruners.NopPruner()
    if cfg.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if cfg.pruner == "hyperband":
        # Evaluations per trial are known up front only when they are per epoch.
        max_resource = cfg.epochs if cfg.eval_every_steps is None else "auto"
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_resource, reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def make_storage(url: str | None, default_dir: Path, study_name: str, heartbeat: SearchConfig | None = None):
    """An RDB URL (PostgreSQL for several machines), given `heartbeat` (the search settings),
    gets Optuna's heartbeat: a trial whose worker stops beating for `search.grace_period`
    is failed and retried once with the same parameters. Otherwise a JournalFile in the
    project (safe for several processes; its dead trials are found by `reap_stale_trials`).
    Without `heartbeat` the storage only reads and writes the study (a test inspecting it)."""
    if url and "://" in url:
        if heartbeat is None:
            return RDBStorage(url)
        return RDBStorage(
            url, heartbeat_interval=heartbeat.heartbeat_interval, grace_period=heartbeat.grace_period,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    path = Path(url) if url else default_dir / f"{study_name}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    mend_torn_journal(path)
    return JournalStorage(JournalFileBackend(str(path)))


def mend_torn_journal(path: Path) -> bool:
    """Drop a last record that a kill cut short (no final newline); True if there was one.
    Optuna's reader skips such a line, but its next append lands on the end of it: that
    record is lost (the trial it created cannot be found) and every later read of the
    journal fails. It is cut under the journal's own lock, which a live writer holds for
    its whole append, so only a dead writer's record can be found incomplete."""
    if _ends_whole(path):
        return False
    lock = JournalFileSymlinkLock(str(path))  # the lock JournalFileBackend takes by default
    lock.acquire()
    try:
        if _ends_whole(path):  # mended meanwhile by another process
            return False
        with path.open("r+b") as journal:
            size = journal.seek(0, os.SEEK_END)
            end = _after_last_newline(journal, size)
            journal.truncate(end)
            journal.flush()
            os.fsync(journal.fileno())
    finally:
        lock.release()
    print(f"{path}: dropped its last record ({size - end} bytes), cut short by a killed writer")
    return True


def _ends_whole(path: Path) -> bool:
    """True when the file is absent, empty or ends with a newline."""
    try:
        with path.open("rb") as journal:
            size = journal.seek(0, os.SEEK_END)
            if size == 0:
                return True
            journal.seek(size - 1)
            return journal.read(1) == b"\n"
    except FileNotFoundError:
        return True


def _after_last_newline(journal, size: int, chunk: int = 1 << 16) -> int:
    pos = size
    while pos > 0:
        start = max(0, pos - chunk)
        journal.seek(start)
        found = journal.read(pos - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        pos = start
    return 0


def open_study(cfg: SearchConfig, name: str, url: str | None, default_dir: Path, worker: int = 0) -> StudyHandle:
    """Create the study `name` on its storage, or load it when it exists."""
    storage = make_storage(url, default_dir, cfg.study_name, heartbeat=cfg)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                sampler=make_sampler(cfg, worker), pruner=make_pruner(cfg), load_if_exists=True)
    return StudyHandle.of(study, storage)


def study_name(cfg: SearchConfig, inputs_digest: str) -> str:
    """Same settings and inputs -> same study (a rerun continues it); changed ones -> a fresh study."""
    identity = {k: v for k, v in cfg.model_dump().items() if k not in _NOT_IDENTITY} | {"inputs": inputs_digest}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{cfg.study_name}-{digest}"


def finished_trials(study: optuna.Study) -> int:
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))


def remaining_budget(study: optuna.Study, n_trials: int) -> int:
    """n_trials is the study's total across reruns: only the shortfall is run."""
    return max(0, n_trials - finished_trials(study))


def reap_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose owning process died, and queue a retry of each with
    the same parameters. Journal storage has no heartbeat, so liveness is the owner's
    host and pid, recorded by the trial as the user attribute "owner"."""
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if liveness.is_dead(trial.user_attrs.get("owner")):
            # What Optuna's fail_stale_trials does for heartbeat storages: FAIL, then a retry.
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            reaped.append(trial.number)
    return reaped


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial with every searched setting, for `dvc plots` and the MLflow run."""
    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.user_attrs.get("settings", t.params)} - {"learning_rate", "optimizer"})
    columns = ["trial", "state", "val_macro_f1", "epochs_trained", "learning_rate", "optimizer", *keys]
    rows = [{"trial": t.number, "state": t.state.name, "val_macro_f1": t.value,
             "epochs_trained": t.user_attrs.get("epochs_trained", len(t.intermediate_values)),
             **t.user_attrs.get("settings", t.params)} for t in trials]
    return pd.DataFrame(rows, columns=columns)


def pick_best(values: Mapping[int, float], tolerance: float) -> int:
    """The best trial's number, from finished trials' values {number: value} (higher is better).
    In trial-number order, a trial replaces the best so far only when it beats it by more than
    `tolerance` (search.tie_tolerance): a near-tie goes to the earlier trial, so a last-bit
    difference between machines does not flip the pick, and the pick is within `tolerance` of
    the highest value. The search's kept model (objective.keep_if_best) follows the same rule."""
    if not values:
        raise ValueError("no finished trial to pick the best from")
    best = min(values)
    for number in sorted(values):
        if values[number] > values[best] + tolerance:
            best = number
    return best


def best_trial(study: optuna.Study, tolerance: float) -> FrozenTrial:
    """The study's best COMPLETE trial by `pick_best` (Optuna's own best_trial takes the highest value)."""
    complete = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    return complete[pick_best({number: t.value for number, t in complete.items()}, tolerance)]


def best_params(study: optuna.Study, tolerance: float) -> dict:
    """The best trial's settings (what finetune takes), its score, number and best epoch."""
    best = best_trial(study, tolerance)
    return {**best.user_attrs.get("settings", best.params), "val_macro_f1": best.value, "trial": best.number,
            "best_epoch": best.user_attrs.get("best_epoch"), "study": study.study_name}
