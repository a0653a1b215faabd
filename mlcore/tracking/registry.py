"""Logging the classifier as a pyfunc model and gating the `champion` alias on a metric (and the baseline)."""
from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from mlcore.tracking import audit
from mlcore.tracking.advice import without_type_hint_advice
from mlcore.tracking.gate import ChampionScore
from mlcore.tracking.promotion import Decision
from mlcore.tracking.tags import SOURCE_TAG

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
# Shipped with the model (MLflow code_paths): the classifier's pooling, which pyfunc_model imports.
POOLING_CODE = Path(__file__).parents[1] / "models" / "classifier_pooling.py"
# ... and the serving format's loader, which both pyfuncs share.
RUNTIME_CODE = Path(__file__).parents[1] / "models" / "serving_runtime.py"
TEXT_CODE_PATHS = [str(POOLING_CODE), str(RUNTIME_CODE)]
TEXT_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "pandas", "numpy")


def as_frame(inputs: list[str] | pd.DataFrame) -> pd.DataFrame:
    """The model's input frame: texts as the `text` column; a frame (images) as it is."""
    return inputs if isinstance(inputs, pd.DataFrame) else pd.DataFrame({"text": list(inputs)})


def _flavour(model_dir: Path) -> tuple[Path, list[str], tuple[str, ...]]:
    """The pyfunc code, what ships beside it, and the packages it needs: text or image."""
    from mlcore.tracking import pyfunc_image_files

    if pyfunc_image_files.is_image_model(model_dir):
        return pyfunc_image_files.CODE, pyfunc_image_files.code_paths(), pyfunc_image_files.PACKAGES
    return PYFUNC_CODE, TEXT_CODE_PATHS, TEXT_PACKAGES


def _runtime_packages(serving: Path | None) -> tuple[str, ...]:
    """What the chosen serving format runs on beyond torch: onnxruntime for an ONNX graph (without it the
    model still loads, on torch)."""
    spec = Path(serving) / "serving.json" if serving else None
    graph = spec is not None and spec.is_file() and json.loads(spec.read_text()).get("graph")
    return ("onnxruntime",) if graph else ()


def find_version(name: str, digest: str) -> str | None:
    """The newest version of `name` registered from the same classifier and metrics, if any."""
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    same = [int(v.version) for v in versions if v.tags.get(SOURCE_TAG) == digest]
    return str(max(same)) if same else None


def log_classifier(model_dir: Path, examples: list[str] | pd.DataFrame, labels: list[str], registered_name: str,
                   digest: str | None = None, extra_artifacts: dict[str, Path] | None = None,
                   tags: dict[str, str] | None = None, training: dict | None = None):
    """Log the model under the active run, named after `registered_name`, and register a new version
    of it (created with its SOURCE_TAG and `tags` in one call, so no version is ever without them).
    `examples`: a few texts, or an input frame (images: an `image` column of encoded bytes).
    `extra_artifacts` (the model card, ...) travel inside the logged model. `training`: the settings
    it was trained with, its params in the UI (MLflow adds the active run's own params to them)."""
    example = as_frame(examples)
    output = pd.Series([labels[0]] * len(example), name="label")
    signature = infer_signature(example, output, params={"return_scores": False})
    code, code_paths, packages = _flavour(model_dir)
    reqs = [f"{pkg}=={version(pkg)}" for pkg in packages + _runtime_packages((extra_artifacts or {}).get("serving"))]
    with without_type_hint_advice():
        info = _log(model_dir, example, signature, reqs, extra_artifacts or {}, code, code_paths,
                    logged_name(registered_name), training or {})
    all_tags = {**(tags or {}), **({SOURCE_TAG: digest} if digest else {})}
    return mlflow.register_model(info.model_uri, registered_name, tags=all_tags or None)


def logged_name(registered_name: str) -> str:
    """The logged model's name: the registered model's, less what MLflow refuses in one (/ : . % ' ")."""
    return re.sub(r"""[/:.%'"]""", "-", registered_name)


def _log(model_dir, example, signature, reqs, extra_artifacts, code: Path, code_paths: list[str], name: str,
         params: dict):
    return mlflow.pyfunc.log_model(
        name=name,
        params=params,
        python_model=str(code),
        artifacts={"model_dir": str(model_dir), **{k: str(v) for k, v in extra_artifacts.items()}},
        code_paths=code_paths,
        signature=signature,
        input_example=example,
        pip_requirements=reqs,
    )


def apply(client: MlflowClient, name: str, version_: str, decision: Decision, champion: ChampionScore,
          by: str) -> None:
    """Point the decided alias at the version and append the move (or the keep) to the audit record.
    A version that already is the champion, or already kept as challenger (a killed register,
    rerun), is left as it is."""
    if champion.version is not None and str(champion.version) == str(version_):
        return
    last = (audit.read(client, name) or [{}])[-1]
    if decision.alias == "challenger" and last.get("challenger") == str(version_):
        return  # a register killed after its keep line, rerun: the line is there already
    client.set_registered_model_alias(name, decision.alias, version_)
    if decision.alias == "champion":
        audit.append(client, name, "promote", champion.version, version_, decision.reason, by)
    else:
        audit.append(client, name, "keep", champion.version, champion.version, decision.reason, by,
                     challenger=str(version_))


def describe_model(client: MlflowClient, name: str, labels: list[str], metric: str) -> None:
    """The registered model's own description and tags: what any version of it is and how to load it."""
    audit.describe(client, name, (  # the champion's history stays at its end
        f"Text classifier with labels {', '.join(labels)}, trained and registered by the fine-tuning pipeline. "
        f"Load the serving version with mlflow.pyfunc.load_model('models:/{name}@champion'); `challenger` is the "
        f"newest version that did not replace it. Each version's description (its model card) and tags say how "
        f"it was made; its lineage.json artifact holds every hash. The tag champion.last_move and the history "
        f"below record the moves of `champion`."))
    for key, value in {"task": "text-classification", "labels": ",".join(labels), "gate.metric": metric,
                       "input": "a DataFrame with a `text` column", "output": "label (+ score_<label> with "
                       "params={'return_scores': True})", "producer": "flows.training_pipeline"}.items():
        client.set_registered_model_tag(name, key, value)
