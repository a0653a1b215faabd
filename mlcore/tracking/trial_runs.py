"""MLflow runs of search trials: each trial's nested run, whose end says what happened to the
trial, and the closing of the runs a killed worker on another machine left open."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import mlflow
from mlflow import MlflowClient

from mlcore.tracking.runs import owner_tags
from mlcore.tracking.tags import TRIAL_STATE_TAG, TRIAL_TAG


@contextlib.contextmanager
def trial_run(name: str, pruned: tuple[type[BaseException], ...] = (), tags: dict | None = None,
              parent_run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """A nested trial run whose end says what happened to the trial: FINISHED with tag COMPLETE,
    FINISHED with tag PRUNED and ' pruned' after its name (stopping a trial that cannot win is the
    search working, not failing: MLflow's KILLED would show it with the failures' red icon), or
    FAILED with tag FAIL."""
    # parent_run_id: a worker process nesting its trials under the search run of another process.
    run = mlflow.start_run(
        run_name=name, nested=True, parent_run_id=parent_run_id, tags={**owner_tags(), **(tags or {})})
    try:
        yield run
    except pruned:
        mlflow.set_tags({TRIAL_STATE_TAG: "PRUNED", "mlflow.runName": f"{name} pruned"})
        mlflow.end_run("FINISHED")
        raise
    except BaseException as err:
        mlflow.set_tags({TRIAL_STATE_TAG: "FAIL", "trial.error": repr(err)[:500]})
        mlflow.end_run("FAILED")
        raise
    mlflow.set_tag(TRIAL_STATE_TAG, "COMPLETE")
    mlflow.end_run("FINISHED")


def trial_runs_to_close(running: dict[str, str], failed_trials: set[int]) -> list[str]:
    """Of the RUNNING trial runs {run id: its TRIAL_TAG, the trial number}, those whose trial failed: a
    worker killed mid-trial (another machine, so `close_orphans` cannot tell it died) left them open."""
    return sorted(run_id for run_id, number in running.items() if number.isdigit() and int(number) in failed_trials)


def close_failed_trial_runs(search_run_id: str, failed_trials: set[int]) -> list[str]:
    """End as FAILED the RUNNING trial runs nested under the search run `search_run_id` whose
    Optuna trial failed (its worker went silent and the trial was failed stale). Returns their names."""
    client = MlflowClient()
    experiment = client.get_run(search_run_id).info.experiment_id
    found = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{search_run_id}' and "
                                             "attributes.status = 'RUNNING'", max_results=5000)
    names = {run.info.run_id: run.info.run_name for run in found}
    chosen = trial_runs_to_close({run.info.run_id: run.data.tags.get(TRIAL_TAG, "") for run in found},
                                 failed_trials)
    for run_id in chosen:
        client.set_tag(run_id, TRIAL_STATE_TAG, "FAIL")
        client.set_tag(run_id, "ended_by", "search: its worker went silent, its trial was failed and retried")
        client.set_terminated(run_id, "FAILED")
    return [names[run_id] for run_id in chosen]
