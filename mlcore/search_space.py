"""The Optuna search: space, sampler, pruner, storage and study identity."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import warnings
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from mlcore import liveness
from mlcore.config import SearchConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

# Settings that do not change what a trial means: n_trials is a budget, the rest is plumbing.
_NOT_IDENTITY = ("n_trials", "storage", "study_name", "resume", "num_workers", "workers")


SGD_FAMILY = ("sgd", "sgd_momentum", "sgd_nesterov")
MOMENTUM_OPTIMIZERS = ("sgd_momentum", "sgd_nesterov")


def lr_range(cfg: SearchConfig, optimizer: str) -> tuple[float, float]:
    """SGD's useful learning rates sit ~10-100x above Adam's; one shared range would
    spend half the trials on SGD steps too small to move the weights."""
    scale = cfg.sgd_lr_scale if optimizer in SGD_FAMILY else 1.0
    return cfg.lr_min * scale, cfg.lr_max * scale


def suggest(trial: optuna.Trial, cfg: SearchConfig) -> dict:
    """One trial's settings: TrainSettings overrides (learning_rate, optimizer, and each
    dimension of `search.space` that is not null)."""
    if cfg.sampler == "grid":
        return {"optimizer": trial.suggest_categorical("optimizer", list(cfg.grid["optimizer"])),
                "learning_rate": trial.suggest_categorical("learning_rate", list(cfg.grid["learning_rate"]))}
    optimizer = trial.suggest_categorical("optimizer", list(cfg.optimizers))
    low, high = lr_range(cfg, optimizer)
    params = {"learning_rate": trial.suggest_float("learning_rate", low, high, log=True), "optimizer": optimizer}
    space = cfg.space
    if space.weight_decay:
        params["weight_decay"] = trial.suggest_float("weight_decay", *space.weight_decay, log=True)
    if space.warmup:
        params["warmup"] = trial.suggest_float("warmup", *space.warmup)
    if space.layerwise_lr_decay:
        params["layerwise_lr_decay"] = trial.suggest_float("layerwise_lr_decay", *space.layerwise_lr_decay)
    if space.freeze_layers:
        frozen = trial.suggest_int("freeze_layers", *space.freeze_layers)
        params |= {"strategy": "freeze_bottom", "freeze_layers": frozen} if frozen else {"strategy": "full", "freeze_layers": 0}
    if space.batch_size:
        params["batch_size"] = trial.suggest_categorical("batch_size", list(space.batch_size))
    if space.schedule:
        params["schedule"] = trial.suggest_categorical("schedule", list(space.schedule))
    if space.momentum and optimizer in MOMENTUM_OPTIMIZERS:  # conditional: absent from other trials
        params["momentum"] = trial.suggest_float("momentum", *space.momentum)
    return params


def make_sampler(cfg: SearchConfig, worker: int = 0) -> optuna.samplers.BaseSampler:
    """`worker` offsets the seed: parallel workers with one seed would draw the same
    random start-up trials and run each of them twice."""
    seed = cfg.seed + worker
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.sampler == "grid":
        return optuna.samplers.GridSampler(dict(cfg.grid), seed=seed)
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


def make_storage(url: str | None, default_dir: Path, study_name: str):
    """An RDB URL (PostgreSQL for several machines) gets Optuna's heartbeat: a trial
    whose worker stops beating for `grace_period` is failed and retried once with the
    same parameters. Otherwise a JournalFile in the project (safe for several processes;
    its dead trials are found by `reap_stale_trials`)."""
    if url and "://" in url:
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=30, grace_period=120,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1))
    path = Path(url) if url else default_dir / f"{study_name}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


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
            # Optuna's own fail_stale_trials does the same, for heartbeat storages only.
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            reaped.append(trial.number)
    return reaped


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
