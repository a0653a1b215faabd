"""Batch scoring's MLflow edge: resolve a model URI in the registry, load the model, record the run.

`flows/batch_predict.py` wires these into Prefect tasks; `mlcore/scoring` is the MLflow-free core.
MLflow is imported at call time, so importing this module (and the flow, for --help) stays cheap.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlcore.errors import UserError
from mlcore.scoring import model_uri
from mlcore.scoring.model_uri import ModelRef
from mlcore.tracking.advice import without_type_hint_advice
from mlcore.tracking.tags import ROLE_TAG

if TYPE_CHECKING:
    from mlcore.scoring.batch import Progress

EXPERIMENT = "batch-scoring"  # the scoring runs' experiment unless told (flows/batch_predict.py --experiment)


def missing(err: Exception) -> bool:
    """A model that is not there (the user's to fix), not a tracking server that is down or
    overloaded: that stays itself, so flows._hooks sees it as transient and a retry resumes."""
    if isinstance(err, (ConnectionError, TimeoutError)):
        return False
    return isinstance(err, OSError) or getattr(err, "error_code", None) in (
        "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def use_experiment(name: str) -> None:
    """MLflow's store, in experiment `name`. Batch scoring reads no params file, so the store is
    mlcore.tracking.store's rule without it: $MLFLOW_TRACKING_URI, else ./mlflow.db."""
    from mlcore.tracking import runs, ui
    from mlcore.tracking.store import resolve_store

    runs.use_experiment(resolve_store(None), name, ui.batch_scoring())


def resolve(uri: str) -> ModelRef:
    """The concrete version a models:/ URI names now (other URIs are recorded as given).

    Uses the tracking store already configured (see `use_experiment`). A model that is not there
    is a UserError; a registry that cannot be reached raises as itself (transient, retried)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    ref = model_uri.parse(uri)
    if ref.name is None:
        if ":/" not in uri and not Path(uri).exists():  # a path, not runs:/ s3:// file:///
            raise UserError(f"{uri}: no such model directory. Pass --model models:/<name>@<alias>, "
                            f"models:/<name>/<version>, runs:/<run id>/<logged model name> or a logged model's "
                            f"directory.")
        return ref
    client = MlflowClient()
    try:
        if ref.alias:
            return ref.resolved(client.get_model_version_by_alias(ref.name, ref.alias).version)
        return ref.resolved(client.get_model_version(ref.name, ref.version).version) if ref.version else ref
    except MlflowException as err:
        if not missing(err):
            raise
        raise UserError(f"{uri}: not found in the MLflow registry at {client.tracking_uri} ({err.message}). "
                        f"Check the model name and alias or version (`mlflow models` or the MLflow UI lists "
                        f"them), or set MLFLOW_TRACKING_URI to the registry that holds it.") from None


def load(ref: ModelRef):
    """The pyfunc model at `ref.load_uri` (exactly the resolved version). A model that is not there
    or whose artifacts cannot be read is a UserError; other failures raise as themselves."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        with without_type_hint_advice():
            return mlflow.pyfunc.load_model(ref.load_uri)
    except (MlflowException, OSError) as err:
        if not missing(err):
            raise
        raise UserError(f"{ref.uri}: the model could not be loaded from {ref.load_uri}: {err}. Check the URI "
                        f"and that its artifacts are reachable from this machine.") from None


def record(meta: dict, progress: Progress, chunk_rows: int, experiment: str) -> str:
    """One MLflow run in `experiment` for a finished scoring job: the model version, input and output
    as params, row counts and throughput as metrics, `meta` as batch_predict.json. Returns its id."""
    import mlflow

    from mlcore.tracking import runs

    use_experiment(experiment)
    tags = {ROLE_TAG: "batch-scoring", **runs.owner_tags()}
    with mlflow.start_run(run_name=f"score {Path(meta['input']).name}", tags=tags) as run:
        runs.log_params({"model_uri": meta["model_uri"], "model_version": meta["model_version"],
                         "input": meta["input"], "output": meta["output"], "chunk_rows": chunk_rows})
        runs.log_metrics({"rows": meta["rows"], "bad_rows": meta["bad_rows"], "rows_per_s": progress.rows_per_s,
                          "resumed_chunks": progress.resumed})
        mlflow.log_dict(meta, "batch_predict.json")
    return run.info.run_id
