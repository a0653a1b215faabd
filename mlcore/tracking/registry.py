"""Logging the classifier as a pyfunc model and gating the `champion` alias on a metric (and the baseline)."""
from __future__ import annotations

import warnings
from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from mlcore.tracking.promotion import decide

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
# Shipped with the model (MLflow code_paths): the classifier's pooling, which pyfunc_model imports.
POOLING_CODE = Path(__file__).parents[1] / "models" / "classifier_pooling.py"
METRIC_TAG = "test_{metric}"
BASELINE_TAG = "test_baseline_{metric}"
REASON_TAG = "gate.reason"
# What a version was made from (classifier weights + test metrics): a register stage killed after
# creating its version but before dvc.lock recorded it finds that version on the rerun and
# reuses it, so each completed register stage leaves exactly one version.
SOURCE_TAG = "source.digest"


def find_version(name: str, digest: str) -> str | None:
    """The newest version of `name` registered from the same classifier and metrics, if any."""
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    same = [int(v.version) for v in versions if v.tags.get(SOURCE_TAG) == digest]
    return str(max(same)) if same else None


def log_classifier(model_dir: Path, example_texts: list[str], labels: list[str], registered_name: str,
                   digest: str | None = None):
    """Log the model under the active run and register a new version of `registered_name`
    (created with its SOURCE_TAG in one call, so no version is ever without it)."""
    example = pd.DataFrame({"text": example_texts})
    output = pd.Series([labels[0]] * len(example_texts), name="label")
    signature = infer_signature(example, output, params={"return_scores": False})
    packages = ("torch", "transformers", "tokenizers", "safetensors", "pandas", "numpy")
    reqs = [f"{pkg}=={version(pkg)}" for pkg in packages]
    with warnings.catch_warnings():
        # predict() accepts DataFrames, Series and lists on purpose; the explicit signature
        # documents the input, so MLflow's "add type hints" advice does not apply.
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        info = _log(model_dir, example, signature, reqs)
    return mlflow.register_model(info.model_uri, registered_name, tags={SOURCE_TAG: digest} if digest else None)


def _log(model_dir, example, signature, reqs):
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_CODE),
        artifacts={"model_dir": str(model_dir)},
        code_paths=[str(POOLING_CODE)],
        signature=signature,
        input_example=example,
        pip_requirements=reqs,
    )


def champion_value(client: MlflowClient, name: str, metric: str) -> tuple[str | None, float | None]:
    try:
        mv = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None, None
    value = mv.tags.get(METRIC_TAG.format(metric=metric))
    return mv.version, (float(value) if value is not None else None)


def promote(name: str, version_: str, metric: str, value: float, min_delta: float,
            baseline_value: float | None = None, require_beat_baseline: bool = True) -> dict:
    """Tag the version with its metric (and the baseline's), point `champion` or `challenger` at it
    as `promotion.decide` says, and tag it with the reason (`gate.reason`)."""
    client = MlflowClient()
    client.set_model_version_tag(name, version_, METRIC_TAG.format(metric=metric), str(value))
    if baseline_value is not None:
        client.set_model_version_tag(name, version_, BASELINE_TAG.format(metric=metric), str(baseline_value))
    previous_version, previous_value = champion_value(client, name, metric)
    if previous_version is not None and str(previous_version) == str(version_):  # a killed register, rerun
        alias, reason = "champion", client.get_model_version(name, version_).tags.get(REASON_TAG, "champion")
    else:
        alias, reason = decide(metric, value, previous_value, min_delta, baseline_value, require_beat_baseline)
    client.set_model_version_tag(name, version_, REASON_TAG, reason)
    client.set_registered_model_alias(name, alias, version_)
    return {
        "model_name": name,
        "version": str(version_),
        "alias": alias,
        "reason": reason,
        "metric": metric,
        "value": value,
        "baseline_value": baseline_value,
        "require_beat_baseline": require_beat_baseline,
        "previous_champion_version": previous_version,
        "previous_champion_value": previous_value,
        "min_delta": min_delta,
        "model_uri": f"models:/{name}@{alias}",
    }
