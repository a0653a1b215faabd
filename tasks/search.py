"""search: an Optuna study (seeded TPE and successive halving by default) over learning rate,
optimizer and the optional dimensions of search.space.

Each trial fine-tunes the pretrained checkpoint for a few epochs and reports the
validation macro-F1 each epoch; each is an MLflow run nested under the search run.
The study lives in a file under the project (or PostgreSQL), so a rerun finishes its
budget; search.workers > 1 adds worker processes on the same study (inside the Prefect
flow, a process pool whose trials are task runs: tasks/_trial_pool.py).
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import optuna
import pandas as pd

from mlcore import plots
from mlcore.search import claims, studies
from mlcore.config import Config
from mlcore.errors import UserError
from mlcore.tracking import runs
from tasks import _io
from tasks import _paths as P
from tasks import _search_workers as search_workers
from tasks._runner import as_task, cli
from tasks._trials import make_objective, open_study, worker_threads

STAGE = "search"


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial with every searched setting, for `dvc plots` and the MLflow run."""
    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.user_attrs.get("settings", t.params)} - {"learning_rate", "optimizer"})
    columns = ["trial", "state", "val_macro_f1", "epochs_trained", "learning_rate", "optimizer", *keys]
    rows = [{"trial": t.number, "state": t.state.name, "val_macro_f1": t.value,
             "epochs_trained": t.user_attrs.get("epochs_trained", len(t.intermediate_values)), **t.user_attrs.get("settings", t.params)} for t in trials]
    return pd.DataFrame(rows, columns=columns)


def log_study_plots(study: optuna.Study) -> None:
    """Optuna's own plots, as PNG artifacts of the search run."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in plots.study_plots(study, Path(tmp)):
            runs.log_artifact(path, "optuna_plots")


def in_flow() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def as_prefect_tasks(objective):
    """Inside the Prefect flow, each trial of this process is a task run named trial-N
    (a pruned trial completes with a note; the pruning is re-raised outside the task).
    Run by DVC, there is no flow and the objective is returned as it is."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    if not in_flow():
        return objective

    @task(name="trial", task_run_name="trial-{number}", cache_policy=NO_CACHE)
    def trial_task(number: int, trial: optuna.Trial) -> dict:
        try:
            return {"value": objective(trial)}
        except optuna.TrialPruned as pruned:
            return {"pruned": str(pruned)}

    def run_as_task(trial: optuna.Trial) -> float:
        out = trial_task(trial.number, trial)
        if "pruned" in out:
            raise optuna.TrialPruned(out["pruned"])
        return out["value"]

    return run_as_task


def run(cfg: Config, parent_run_id: str | None = None) -> dict:
    s = cfg.search
    orphans = runs.close_orphans(cfg)
    pooled = s.workers > 1 and in_flow()  # trials as Prefect task runs on a process pool
    with runs.stage_run(cfg, STAGE, parent_run_id) as stage:
        stage_id = stage.info.run_id if stage else None
        # Extra workers start first: they need seconds to import and load the data.
        helpers = [] if pooled else search_workers.start(cfg, s.workers - 1, stage_id)
        try:
            device, label2id, train, val, study, name = open_study(
                cfg, worker_threads(cfg) if s.workers > 1 else None, trains=not pooled)
            stale = studies.reap_stale_trials(study)
            if stale or orphans:
                print(f"search: trials {stale} of a process that died were failed and queued again; "
                      f"MLflow runs closed as FAILED: {orphans}")
            todo = studies.remaining_budget(study, s.n_trials)
            runs.log_params(s.model_dump() | {"study": name, "device": str(device), "trials_to_run": todo})
            print(f"search: study {name}: {studies.finished_trials(study)} trials done, {todo} to run, {s.workers} worker(s)")
            if pooled:
                from tasks._trial_pool import run_pooled

                run_pooled(cfg, study, P.OPTUNA_DIR / f"{name}.lock", stage_id)
            else:
                objective = as_prefect_tasks(make_objective(cfg, label2id, train, val, device, name))
                claims.run_trials(study, objective, s.n_trials, P.OPTUNA_DIR / f"{name}.lock")
        except BaseException:
            search_workers.stop(helpers)  # SIGTERM or a failure here: the workers end their trials as FAIL
            raise
        search_workers.wait(helpers)
        table = trials_table(study)
        P.SEARCH_TRIALS.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(P.SEARCH_TRIALS, index=False)
        complete = table[table["state"] == "COMPLETE"]
        if complete.empty:
            raise UserError(f"search: no trial of study {name} completed ({table['state'].value_counts().to_dict()}). "
                            f"Widen search.lr_min/lr_max or add optimizers in params.yaml.")
        best = study.best_trial
        best_params = {**best.user_attrs.get("settings", best.params), "val_macro_f1": best.value, "trial": best.number,
                       "best_epoch": best.user_attrs.get("best_epoch"), "study": name}
        _io.fresh_dir(P.SEARCH)
        _io.write_json(P.BEST_PARAMS, best_params)
        kept = P.TRIAL_MODELS / name
        if (kept / "trial.json").is_file() and json.loads((kept / "trial.json").read_text())["trial"] == best.number:
            shutil.copytree(kept, P.BEST_TRIAL_MODEL)
        counts = table["state"].value_counts().to_dict()
        runs.log_metrics({"best_val_macro_f1": best.value, **{f"trials_{k.lower()}": v for k, v in counts.items()}})
        runs.set_tags({"best.learning_rate": best.params["learning_rate"], "best.optimizer": best.params["optimizer"]})
        runs.log_artifact(P.SEARCH_TRIALS)
        runs.log_params({f"best.{k}": v for k, v in best.params.items()})
        log_study_plots(study)
    return {"best_val_macro_f1": round(best.value, 4), **best.params, "trials": counts}


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
