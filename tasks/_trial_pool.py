"""Parallel search trials inside the Prefect flow: each trial is a Prefect task run.

With `search.workers: N` under the flow, Prefect's ProcessPoolTaskRunner keeps N spawned
processes. Each loads the data and opens the study once (the pool's initializer). The
search stage's process claims trials under the study lock (ask, so one sampler draws
every trial) and hands each to a free process as the task run `trial-<number>`, which
carries the flow's context: the trials appear under the search task in the Prefect UI.

Run by DVC there is no flow: tasks/_search_workers.py starts plain worker processes.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from mlcore.search import claims, space
from mlcore.config import Config, parse_config

_WORKER: dict = {}  # this pool process's study and objective, set by `_start_worker`


def _start_worker(config_json: str, parent_run_id: str | None) -> None:
    """Pool initializer: data, study and objective once per process, not once per trial."""
    from mlcore.tracking import runs
    from tasks import _trials

    # SIGTERM (the stage stopping) ends the current trial as FAIL and its MLflow run as FAILED.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    cfg = parse_config(json.loads(config_json), "search.workers pool")
    device, label2id, train, val, study, name = _trials.open_study(cfg, _trials.worker_threads(cfg))
    runs.configure(cfg)
    _WORKER.update(study=study, objective=_trials.make_objective(cfg, label2id, train, val, device, name,
                                                                 parent_run_id=parent_run_id))


@task(name="trial", task_run_name="trial-{number}", cache_policy=NO_CACHE)
def pooled_trial(number: int, trial_id: int) -> dict:
    """Run trial `number` (already claimed by the stage) in this pool process. A pruned trial
    completes with its state in the result: pruning is a search outcome, not a task failure."""
    import optuna

    from tasks import _trial_pool  # the module itself: this function travels by value

    worker = _trial_pool._WORKER
    trial = optuna.Trial(worker["study"], trial_id)
    state = claims.run_claimed(worker["study"], trial, worker["objective"])
    return {"trial": number, "state": state.name}


@contextlib.contextmanager
def _children_use_this_api():
    """Pool processes report to the flow's Prefect API. Under the ephemeral API that is a
    local server of this process, which spawned children would not find on their own
    (each would start a server of its own)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        yield  # a configured API: the children inherit it
        return
    server = SubprocessASGIServer()
    server.start()  # already running under the flow: a no-op that returns its address
    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old


def run_pooled(cfg: Config, study, lock: Path, parent_run_id: str | None) -> int:
    """Run the study's remaining budget as task runs on `search.workers` pool processes."""
    from prefect.task_runners import ProcessPoolTaskRunner

    n, failures, ran = cfg.search.workers, [], []

    def sample(trial):
        space.suggest(trial, cfg.search)

    def slot(runner):
        try:
            # Parameters are drawn at the claim, by this process's sampler: pool processes share
            # one seed, so sampling there would repeat the same random start-up trials.
            while not failures and (trial := claims.claim_trial(study, cfg.search.n_trials, lock, sample)) is not None:
                ran.append(trial.number)
                runner.submit(pooled_trial, {"number": trial.number, "trial_id": trial._trial_id}).result()
        except BaseException as err:  # noqa: BLE001 - re-raised in the stage's thread below
            failures.append(err)

    with _children_use_this_api(), ProcessPoolTaskRunner(
            max_workers=n, initializer=_start_worker, initargs=(json.dumps(cfg.model_dump()), parent_run_id)) as runner:
        threads = [threading.Thread(target=slot, args=(runner,), name=f"search-slot-{i}", daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except BaseException:
            _stop_pool(runner)  # SIGTERM or Ctrl-C: do not wait for the running trials
            raise
    if failures:
        raise failures[0]
    return len(ran)


def _stop_pool(runner) -> None:
    """SIGTERM to the pool's processes (their trials end as FAIL); leaving the runner
    would otherwise wait for every running trial to finish. Prefect has no public call
    for this, so the executor's process table is read directly."""
    processes = getattr(getattr(runner, "_executor", None), "_processes", None) or {}
    for process in list(processes.values()):
        if process.is_alive():
            process.terminate()
