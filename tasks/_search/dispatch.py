"""Running the study's remaining budget: in this process, with extra worker processes beside
it (search.workers under DVC), on a Prefect process pool (search.workers inside the flow), or
with flow runs on other machines (search.engine prefect)."""
from __future__ import annotations

import optuna
import torch

from mlcore.config import Config
from mlcore.config.environment import redact
from mlcore.engine import precision
from mlcore.search import claims, studies
from mlcore.tracking import runs
from tasks import _paths as P
from tasks._search import pool, remote, trials, workers


def run_budget(cfg: Config, stage_run_id: str | None, device: torch.device | None = None) -> optuna.Study:
    """Run trials until `search.n_trials` have finished; returns the study. `device`: the stage's
    (tasks/_context.py); worker processes resolve their own."""
    s = cfg.search
    on_machines = s.engine == "prefect"
    pooled = not on_machines and s.workers > 1 and pool.in_flow()
    # Extra workers start first: they need seconds to import and load the data.
    helpers = [] if pooled or on_machines else workers.start(cfg, s.workers - 1, stage_run_id)
    submitted = remote.submit(cfg, studies.study_name(s, trials.inputs_digest()), stage_run_id) if on_machines else []
    try:
        o = trials.open_study(cfg, trials.worker_threads(cfg) if s.workers > 1 else None, trains=not pooled,
                              device=device)
        study, name = o.study, o.name
        stale = studies.reap_stale_trials(study)
        if stale:  # MLflow's side of the same kill was closed before the stage (tasks/_recovery.py)
            print(f"search: trials {stale} of a process that died were failed and queued again")
        todo = studies.remaining_budget(study, s.n_trials)
        runs.log_params(s.model_dump() | o.report() | {"storage": redact(s.storage), "study": name,
                                                       "device": str(o.device), "trials_to_run": todo})
        runs.log_inputs(o.datasets)
        runs.set_tags(runs.numerics_tags(precision.numerics(o.device, precision.resolve(
            o.kind.precision(s.precision, P.PRETRAINED, o.device), o.device))))
        print(f"search: study {name}: {studies.finished_trials(study)} trials done, {todo} to run, "
              f"{s.workers} worker(s); {o.train_rows} train rows, trials use {len(o.train)}; {o.shape.describe()}")
        if pooled:
            pool.run_pooled(cfg, o.handle, trials.claim_lock(name), stage_run_id)
        else:
            run = claims.run_here(o.handle, pool.as_prefect_tasks(trials.tracked_objective(cfg, o)))
            if on_machines:
                remote.finish_with_workers(cfg, o.handle, trials.claim_lock(name), run, stage_run_id, submitted)
            else:
                claims.run_trials(o.handle, s.n_trials, trials.claim_lock(name), run)
    except BaseException:
        workers.stop(helpers)  # SIGTERM or a failure here: the workers end their trials as FAIL
        remote.settle(submitted, 0.0)  # flow runs not yet started are cancelled; started ones finish the budget
        raise
    workers.wait(helpers)
    return study
