"""MLflow runs: one pipeline parent run, a child per stage, trials nested under the search."""
from __future__ import annotations

import contextlib
import logging
import math
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow
import yaml
from mlflow import MlflowClient

from mlcore import liveness
from mlcore.config import Config
from mlcore.data.hashing import file_md5
from mlcore.engine import distributed
from mlcore.tracking import ui
from mlcore.tracking.sqlite_creation import create_whole
from mlcore.tracking.store import SQLITE, resolve_store
from mlcore.tracking.tags import (
    NOTE_TAG,
    NUMERICS_PREFIX,
    OWNER_PREFIX,
    REASON_TAG,
    ROLE_TAG,
    TRIAL_STATE_TAG,
)

# MLflow's own INFO chatter ("View run ... at ...") drowns the pipeline's progress output.
logging.getLogger("mlflow").setLevel(logging.WARNING)


def configure(cfg: Config) -> str:
    """Point MLflow at the configured store and experiment; returns the experiment id."""
    return use_experiment(resolve_store(cfg), cfg.tracking.experiment, ui.training(cfg.register.metric))


def use_experiment(uri: str, name: str, look: ui.Look | None = None) -> str:
    """Point MLflow at store `uri` and experiment `name` (made if it is not there), tagged as model
    training with `look`'s description and saved views (mlcore/tracking/ui.py); returns its id."""
    look = look or ui.Look(note="")  # the kind alone
    create_whole(uri)  # a kill while MLflow creates a SQLite store would break it for good
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        for key, value in ui.wanted_tags(exp.tags, look).items():  # an experiment made by an older release
            client.set_experiment_tag(exp.experiment_id, key, value)
        mlflow.set_experiment(experiment_id=exp.experiment_id)
        return exp.experiment_id
    location = None
    if uri.startswith(SQLITE):
        # Keep artifacts next to the database instead of wherever the cwd happens to be.
        location = (Path(uri.removeprefix(SQLITE)).resolve().parent / "mlartifacts").as_uri()
    exp_id = client.create_experiment(name, artifact_location=location, tags=ui.wanted_tags({}, look))
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def raw_data_hash(raw: str | Path) -> str:
    """The DVC hash of the raw data: from its .dvc file when tracked, else the file's md5 (DVC's hash)."""
    raw = Path(raw)
    dvc_file = raw.with_name(raw.name + ".dvc")
    if dvc_file.is_file():
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
        if outs[0].get("md5"):
            return outs[0]["md5"]
    return file_md5(raw) if raw.is_file() else "missing"


def lineage_tags(cfg: Config) -> dict[str, str]:
    commit = _git("rev-parse", "HEAD") or "unknown"
    return {
        "git.commit": commit,
        "mlflow.source.git.commit": commit,
        "git.dirty": str(bool(_git("status", "--porcelain", "--untracked-files=no"))).lower(),
        "data.raw_path": cfg.prepare.input,
        "data.raw_dvc_md5": raw_data_hash(cfg.prepare.input),
    }


@contextlib.contextmanager
def pipeline_run(cfg: Config, run_name: str = "pipeline") -> Iterator[str]:
    """The parent run of one pipeline execution, ended FAILED if anything raises."""
    exp_id = configure(cfg)
    client = MlflowClient()
    run = client.create_run(
        exp_id, run_name=run_name, tags={**lineage_tags(cfg), **owner_tags(), ROLE_TAG: "pipeline"})
    run_id = run.info.run_id
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def log_outcome(run_id: str, metrics: dict, registration: dict) -> None:
    """On a run that is not the active one (the pipeline's): the test metrics (evaluate's
    metrics.json, as test_<name>, the baseline's among them) and the gate's decision
    (register's registration.json) as tags and as the run's description."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    numbers = [Metric(f"test_{k}", float(v), now, 0) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    tags = []
    if registration.get("version"):
        decision = (f"{registration['model_name']} version {registration['version']} -> @{registration['alias']}: "
                    f"{registration['reason']}")
        tags = [RunTag("registered.version", str(registration["version"])),
                RunTag("registered.alias", str(registration["alias"])), RunTag(REASON_TAG, registration["reason"]),
                RunTag(NOTE_TAG, decision)]
    if numbers or tags:
        MlflowClient().log_batch(run_id, metrics=numbers, tags=tags)


def owner_tags() -> dict[str, str]:
    return {f"{OWNER_PREFIX}{k}": v for k, v in liveness.owner().items()}


def close_orphans(cfg: Config) -> list[str]:
    """End as FAILED every RUNNING run of the experiment whose owning process is dead
    (killed with SIGKILL, so it could not close its own runs). Returns their names."""
    exp_id = configure(cfg)
    client = MlflowClient()
    closed = []
    for run in client.search_runs([exp_id], "attributes.status = 'RUNNING'", max_results=5000):
        tags = run.data.tags
        record = {k.removeprefix(OWNER_PREFIX): v for k, v in tags.items() if k.startswith(OWNER_PREFIX)}
        if liveness.is_dead(record):
            if tags.get(TRIAL_STATE_TAG) is None and run.info.run_name.startswith("trial-"):
                client.set_tag(run.info.run_id, TRIAL_STATE_TAG, "FAIL")
            client.set_tag(run.info.run_id, "ended_by", "orphan cleanup: owner process died")
            client.set_terminated(run.info.run_id, "FAILED")
            closed.append(run.info.run_name)
    return closed


def tag_run(run_id: str | None, key: str, value: str) -> None:
    """Tag a run that is not the active one (a stage marking itself on the pipeline run)."""
    if run_id:
        MlflowClient().set_tag(run_id, key, value)


@contextlib.contextmanager
def stage_run(cfg: Config, stage: str, parent_run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """A stage's run: nested under the pipeline run when there is one (the Prefect flow),
    standalone when the stage runs on its own (dvc repro). FAILED on any exception."""
    if not distributed.is_main():  # under torchrun, rank 0 alone tracks
        yield None
        return
    configure(cfg)
    tags = {**lineage_tags(cfg), **owner_tags(), ROLE_TAG: "stage", "pipeline.stage": stage,
            "runtime.profile": cfg.runtime.profile}
    with mlflow.start_run(run_name=stage, parent_run_id=parent_run_id, tags=tags) as run:
        yield run


def log_params(params: dict, prefix: str = "") -> None:
    if not distributed.is_main():
        return  # a non-zero rank under torchrun: rank 0 tracks
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            log_params(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    if flat:
        mlflow.log_params(flat)


def log_metrics(metrics: dict, step: int | None = None, prefix: str = "") -> None:
    if not distributed.is_main():
        return
    clean = {f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    if clean:
        mlflow.log_metrics(clean, step=step)


def set_tags(tags: dict) -> None:
    if not distributed.is_main():
        return
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def numerics_tags(record: dict) -> dict[str, str]:
    """mlcore.engine.precision.numerics's record as numerics.<field> tags."""
    return {f"{NUMERICS_PREFIX}{key}": str(value) for key, value in record.items()}


# MLflow's dataset contexts, shown in the runs list's Dataset column and the lineage view.
_CONTEXTS = {"train": "training", "val": "validation", "test": "testing", "unlabelled": "pretraining"}


def dataset_inputs(splits: dict, directory: str | Path) -> list:
    """Each split (a DataFrame with text and label) as an MLflow dataset input, with its digest, its
    file (`<directory>/<name>.parquet`) as the source and its context; [] off rank 0. Made once, they
    can be logged on many runs (each search trial's)."""
    if not distributed.is_main():
        return []
    from mlflow import data as datasets  # imported here: dataset machinery the other calls never need

    inputs = []
    for name, frame in splits.items():
        if frame.empty:  # no unlabelled rows, say: nothing was read
            continue
        columns = [c for c in ("text", "label") if c in frame.columns]
        with warnings.catch_warnings():  # MLflow registers its local-file source twice ('' and 'file'): harmless
            warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
            dataset = datasets.from_pandas(frame[columns], source=str(Path(directory) / f"{name}.parquet"),
                                           name=name, targets="label" if "label" in columns else None)
        inputs.append(_dataset_input(dataset, _CONTEXTS.get(name, name)))
    return inputs


def log_inputs(inputs: list, also_run_id: str | None = None) -> None:
    """Log dataset inputs on the active run (and on `also_run_id`: the pipeline run, whose row the
    runs list shows first)."""
    active = mlflow.active_run()
    if not inputs or active is None:
        return
    for run_id in filter(None, (active.info.run_id, also_run_id)):
        MlflowClient().log_inputs(run_id, inputs)


def log_datasets(splits: dict, directory: str | Path, also_run_id: str | None = None) -> None:
    """`dataset_inputs` logged on the active run (and on `also_run_id`)."""
    if mlflow.active_run() is not None:
        log_inputs(dataset_inputs(splits, directory), also_run_id)


def _dataset_input(dataset, context: str):
    """The dataset as a run input with its context."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    fields = dataset.to_dict()
    entity = Dataset(name=fields["name"], digest=fields["digest"], source_type=fields["source_type"],
                     source=fields["source"], schema=fields.get("schema"), profile=fields.get("profile"))
    return DatasetInput(entity, [InputTag("mlflow.data.context", context)])


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    if not distributed.is_main():
        return
    mlflow.log_artifact(str(path), artifact_path=artifact_path)
