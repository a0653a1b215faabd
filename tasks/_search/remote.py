"""search.engine prefect: search workers on other machines, as flow runs of the deployment
search-worker/trials that a runner on each machine serves (flows/search_worker.py).

The search stage submits `search.workers` flow runs, then claims trials itself too, so the
budget finishes even when no runner is up. Every worker claims from the one PostgreSQL study
(claims.claim_trial's advisory lock keeps the budget exact) and nests its trial runs under the
stage's MLflow run. A killed worker's trial stops beating; the next claim fails it and queues
a retry, which the stage runs if no one else does. Once the budget is finished the stage gives
the flow runs `search.grace_period` to end, then marks the ones left Crashed (their runner is
gone) or Cancelled (never started), and ends as FAILED the MLflow runs of failed trials.
"""
from __future__ import annotations

import time
from uuid import UUID

from optuna.trial import TrialState

from mlcore.config import Config, parse_config
from mlcore.config.environment import redact
from mlcore.errors import UserError
from mlcore.search import claims, studies
from mlcore.search.studies import StudyHandle
from mlcore.tracking import trial_runs

FLOW = "search-worker"
DEPLOYMENT = "trials"
POLL_S = 2.0  # how often the stage looks for retries to run and for the budget's end


def _shareable(url: str | None) -> str | None:
    """A URL that carries a password is not sent in flow-run parameters (the Prefect UI shows
    them): the worker's machine fills it from its own $OPTUNA_STORAGE / $MLFLOW_TRACKING_URI."""
    return None if redact(url) != url else url


def worker_parameters(cfg: Config, study: str, parent_run_id: str | None, worker: int) -> dict:
    """The flow run's parameters: the validated config (as workers.py freezes it, less passwords),
    the study the worker must find on its machine, the search run to nest trials under, and
    its worker number (which offsets the sampler's seed)."""
    frozen = cfg.model_dump(mode="json")
    frozen["search"]["storage"] = _shareable(frozen["search"]["storage"])
    frozen["tracking"]["mlflow_uri"] = _shareable(frozen["tracking"]["mlflow_uri"])
    return {"config": frozen, "study": study, "parent_run_id": parent_run_id, "worker": worker}


def run_worker(config: dict, study: str, parent_run_id: str | None, worker: int) -> int:
    """The flow run's work on this machine: refuse a study that differs from the search's (other
    data or another pretrained model here), else claim and run trials until the budget is taken."""
    from tasks._search import pool, trials

    cfg = parse_config(config, "search-worker flow parameters")
    here = studies.study_name(cfg.search, trials.inputs_digest())
    if here != study:
        raise UserError(f"search worker: this machine's study would be {here}, the search runs {study}: its "
                        f"prepared data or pretrained model differ. Check out the search's commit and "
                        f"params.yaml here and run `dvc pull`, then serve again.")
    handle, objective = trials.start_worker(cfg, worker, parent_run_id)
    ran = claims.run_trials(handle, cfg.search.n_trials, trials.claim_lock(study),
                            claims.run_here(handle, pool.as_prefect_tasks(objective)))
    print(f"search worker {worker}: {ran} trial(s) run")
    return ran


def submit(cfg: Config, study: str, parent_run_id: str | None) -> list[UUID]:
    """`search.workers` flow runs of the deployment; none (a warning) when it is not deployed.
    Submitted first, before the stage loads its data: a worker needs as long to start."""
    from prefect.deployments import run_deployment
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:  # a temporary local API: no runner of another machine polls it
        print("warning: search: search.engine is prefect but PREFECT_API_URL is not set; running here alone")
        return []
    try:
        return [run_deployment(f"{FLOW}/{DEPLOYMENT}", parameters=worker_parameters(cfg, study, parent_run_id, i),
                               flow_run_name=f"{study}-worker-{i}", timeout=0).id
                for i in range(1, cfg.search.workers + 1)]
    except Exception as err:  # noqa: BLE001 - the stage's own loop still runs the whole budget
        print(f"warning: search: could not submit workers to {FLOW}/{DEPLOYMENT} ({err}); is "
              f"`python -m flows.search_worker serve` running against this PREFECT_API_URL? Running here alone.")
        return []


def budget_finished(h: StudyHandle, n_trials: int) -> bool:
    states = [t.state for t in h.study.get_trials(deepcopy=False)]
    return TrialState.RUNNING not in states and studies.finished_trials(h.study) >= n_trials


def finish_with_workers(cfg: Config, h: StudyHandle, lock, run, parent_run_id: str | None,
                        submitted: list[UUID]) -> None:
    """Run trials here too until the budget is finished (retries of failed-stale trials included),
    then settle the `submitted` flow runs and the failed trials' MLflow runs."""
    n = cfg.search.n_trials
    claims.run_trials(h, n, lock, run)
    settle(submitted, 0.0)  # the budget is taken: runs not yet started are cancelled
    while not budget_finished(h, n):
        time.sleep(POLL_S)
        claims.run_trials(h, n, lock, run)  # each claim fails silent workers' trials first
    settle(submitted, cfg.search.grace_period)
    failed = {t.number for t in h.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    if parent_run_id and failed:
        closed = trial_runs.close_failed_trial_runs(parent_run_id, failed)
        if closed:
            print(f"search: ended as FAILED the MLflow runs {closed}, left open by workers that went silent")


def settle(flow_runs: list[UUID], grace_s: float) -> None:
    """Wait up to `grace_s` for the flow runs to end; then cancel the ones that never started and
    mark Crashed the ones still running (their runner was killed or lost: nothing else ends them)."""
    if not flow_runs:
        return
    from prefect import get_client
    from prefect.states import Cancelled, Crashed

    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + grace_s
        while True:
            left = [r for r in map(client.read_flow_run, flow_runs) if not r.state.is_final()]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(min(POLL_S, grace_s))
        for r in left:
            if r.state.is_scheduled() or r.state.is_pending():
                state = Cancelled(message="search: the budget was taken before this worker started")
            elif grace_s > 0:
                state = Crashed(message=f"search: still {r.state.name} {grace_s:.0f} s after the budget finished; "
                                        f"its runner is presumed dead, its trial was failed and retried")
            else:
                continue
            client.set_flow_run_state(r.id, state, force=True)
            print(f"search: flow run {r.name} marked {state.name}: {state.message}")
