"""Parallel search trials inside the Prefect flow: each trial is a Prefect task run.

With `search.workers: N` under the flow, Prefect's ProcessPoolTaskRunner keeps N spawned
processes. Each loads the data and opens the study once (the pool's initializer). The
search stage's process claims trials under the study lock (ask, so one sampler draws
every trial) and hands each to a free process as the task run `trial-<number>`, which
carries the flow's context: the trials appear under the search task in the Prefect UI.

Run by DVC there is no flow: tasks/_search/workers.py starts plain worker processes.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import optuna
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State

from mlcore import liveness
from mlcore.config import Config, parse_config
from mlcore.search import claims, space
from mlcore.search.studies import StudyHandle
from mlcore.tracking import runs

_WORKER: dict = {}  # this pool process's study handle and objective, set by `_start_worker`


def _start_worker(config_json: str, parent_run_id: str | None) -> None:
    """Pool initializer: data, study and objective once per process, not once per trial."""
    from tasks._process import exit_on_sigterm
    from tasks._search import trials

    exit_on_sigterm()  # the stage stopping: the current trial ends as FAIL, its MLflow run FAILED
    cfg = parse_config(json.loads(config_json), "search.workers pool")
    handle, objective = trials.start_worker(cfg, 0, parent_run_id)
    _WORKER.update(handle=handle, objective=objective)


PRUNED = "Pruned"  # the name of a pruned trial's Completed state: the UI shows it instead of "Completed"


def pruned_state(message: str, result: dict) -> State:
    """A pruned trial's task run ends Completed, for pruning is a search outcome and not a
    failure, but named Pruned, so the Prefect UI tells it from a trial that ran to the end."""
    return Completed(name=PRUNED, message=message, data=result)


@task(name="trial", task_run_name="trial-{number}", cache_policy=NO_CACHE)
def pooled_trial(number: int) -> dict | State:
    """Run trial `number` (already claimed by the stage) in this pool process, its outcome in
    the result. A pruned trial's task reads Pruned; a diverged one (Optuna's FAIL, which the
    search survives) reads Failed, as it does with one worker."""
    from tasks._search import pool  # the module itself: this function travels by value

    handle = pool._WORKER["handle"]
    state = claims.run_claimed(handle, claims.claimed(handle, number), pool._WORKER["objective"])
    result = {"trial": number, "state": state.name}
    if state == optuna.trial.TrialState.PRUNED:
        return pool.pruned_state(f"trial {number} pruned", result)
    if state == optuna.trial.TrialState.FAIL:
        return Failed(message=f"trial {number} failed (diverged); the search goes on", data=result)
    return result


def in_flow() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def as_prefect_tasks(objective):
    """Inside the Prefect flow, each trial of this process is a task run named trial-N
    (a pruned trial ends in a Completed state named Pruned; the pruning is re-raised outside
    the task). Run by DVC, there is no flow and the objective is returned as it is."""
    if not in_flow():
        return objective

    @task(name="trial", task_run_name="trial-{number}", cache_policy=NO_CACHE)
    def trial_task(number: int, trial: optuna.Trial) -> dict | State:
        try:
            return {"value": objective(trial)}
        except optuna.TrialPruned as pruned:
            return pruned_state(f"trial {number} {pruned}", {"trial": number, "state": "PRUNED"})

    def run_as_task(trial: optuna.Trial) -> float:
        out = trial_task(trial.number, trial)
        if isinstance(out, State):  # called directly, a task gives back the state it returned: pruned
            raise optuna.TrialPruned(out.message)
        return out["value"]

    return run_as_task


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


def run_pooled(cfg: Config, h: StudyHandle, lock: Path, parent_run_id: str | None) -> int:
    """Run the study's remaining budget as task runs on `search.workers` pool processes."""
    from prefect.task_runners import ProcessPoolTaskRunner

    n, failures, ran = cfg.search.workers, [], []

    def sample(trial):
        space.suggest(trial, cfg.search)

    def slot(runner):
        def hand_over(trial):  # to a free pool process, which runs and records it
            ran.append(trial.number)
            outcome = runner.submit(pooled_trial, {"number": trial.number}).result(raise_on_failure=False)
            if isinstance(outcome, BaseException):  # the trial raised: the search stops (a diverged one is Failed)
                raise outcome

        try:
            # Parameters are drawn at the claim, by this process's sampler: pool processes share
            # one seed, so sampling there would repeat the same random start-up trials.
            claims.run_trials(h, cfg.search.n_trials, lock, hand_over, sample, stop=lambda: bool(failures),
                              beats_here=False)
        except BaseException as err:  # noqa: BLE001 - re-raised in the stage's thread below
            failures.append(err)

    earlier = set(multiprocessing.active_children())
    with _children_use_this_api(), ProcessPoolTaskRunner(
            max_workers=n, initializer=_start_worker, initargs=(json.dumps(cfg.model_dump()), parent_run_id)) as runner:
        threads = [threading.Thread(target=slot, args=(runner,), name=f"search-slot-{i}", daemon=True)
                   for i in range(n)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except BaseException:
            # SIGTERM or Ctrl-C: do not wait for the running trials
            _stop_pool(set(multiprocessing.active_children()) - earlier, threads)
            _close_what_killed_processes_left(cfg, h.study)
            raise
    if failures:
        raise failures[0]
    return len(ran)


STOP_GRACE_S = 30  # how long a SIGTERM'd pool process may take to fail its trial


def _close_what_killed_processes_left(cfg: Config, study) -> None:
    """A pool process still busy after the grace was SIGKILLed (seen once, on a loaded 2-core
    machine), so its MLflow run and its trial would stay RUNNING until the next run's recovery:
    close them now as FAILED / FAIL (no retry is queued: the stage is stopping)."""
    try:
        closed = runs.close_orphans(cfg)
        dead = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                if liveness.is_dead(t.user_attrs.get("owner"))]
        for number in dead:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        if closed or dead:
            print(f"search: closed what killed pool processes left: MLflow runs {closed}, trials {dead}")
    except Exception as err:  # noqa: BLE001 - the stage is stopping; the next run's recovery closes them
        print(f"warning: could not close what killed pool processes left: {err}")


def _stop_pool(processes, slots: list[threading.Thread]) -> None:
    """SIGTERM to the pool's processes: their running trials end as FAIL, which resolves
    each slot's task future and ends the slot. Then SIGKILL the processes, which the
    executor would otherwise keep (it catches the SystemExit of a task and waits for the
    next one) and join at interpreter exit, holding the flow, and its ephemeral API server,
    alive. Prefect has no public call that lists them: `processes` are the multiprocessing
    children this process started since the pool opened (nothing else here starts one then;
    the ephemeral API server is a plain subprocess, started before)."""
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for slot in slots:
        slot.join(max(0.0, deadline - time.monotonic()))
    for process in alive:
        if process.is_alive():
            process.kill()
            process.join(5)
