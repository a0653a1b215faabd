"""One registration: the fair gate, the model card, the logged version with its lineage, the alias move
and its audit line. The register stage gathers the inputs from the reports and calls `register`."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from mlcore.tracking import gate, lineage, model_card, registry, serve_format
from mlcore.tracking.promotion import Decision, decide
from mlcore.tracking.tags import (
    BASELINE_TAG,
    CHAMPION_SAME_ROWS_TAG,
    CHAMPION_STORED_TAG,
    CHAMPION_UNSCORED_TAG,
    CHAMPION_VERSION_TAG,
    METRIC_TAG,
    REASON_TAG,
    SERVE_FORMAT_TAG,
    SERVE_REASON_TAG,
)

LINEAGE_FILE = "lineage.json"


@dataclass
class Request:
    name: str
    metric: str
    min_delta: float
    require_beat_baseline: bool
    classifier: Path
    digest: str  # what the version is made from (tags.SOURCE_TAG)
    test_inputs: list[str] | pd.DataFrame  # the model's input for the test rows: texts, or a frame of images
    test_labels: list[str]
    card: model_card.CardInputs  # its decision is filled in here
    lineage: dict  # lineage.version_lineage: the version's lineage.json, and its tags
    confusion_png: Path
    by: str  # who or what registers (audit)
    training: dict = field(default_factory=dict)  # the settings it was trained with: the logged model's params
    serve_format: str = "torch"  # register.serve_format: checked on the test rows before it is adopted


def register(req: Request) -> tuple[dict, str]:
    """Register (or find, after a killed register) the version, gate it against the champion
    scored on this run's test rows, and return (registration record, model card text)."""
    client = MlflowClient()
    labels, value = req.card.labels, req.card.metrics[req.metric]
    baseline = req.card.metrics.get(f"baseline_{req.metric}")
    existing = registry.find_version(req.name, req.digest)
    champion = gate.score_champion(req.name, req.test_inputs, req.test_labels, labels, req.metric)
    if existing is not None and champion.version == existing:  # a register rerun: its version already won
        return _as_registered(req, client, existing, value, baseline)
    decision = _decide(req, champion, value, baseline)
    with tempfile.TemporaryDirectory() as tmp:
        serving, serving_dir = _serving(req, Path(tmp) / "serving")
        record = _record(req, decision, champion, value, baseline) | serving.record()
        req.card.decision = record
        card = model_card.render(req.card)
        tags = lineage.version_tags(req.lineage) | {SERVE_FORMAT_TAG: serving.format}
        card_path, lineage_path = Path(tmp) / "MODEL_CARD.md", Path(tmp) / LINEAGE_FILE
        card_path.write_text(card)
        lineage_path.write_text(json.dumps(req.lineage, indent=2, sort_keys=True) + "\n")
        version_ = existing or registry.log_classifier(
            req.classifier, req.test_inputs[:3], labels, req.name, req.digest,
            extra_artifacts={"model_card": card_path, "confusion_matrix": req.confusion_png, "lineage": lineage_path,
                             "serving": serving_dir},
            tags=tags, training=req.training).version
        mlflow.log_artifact(str(card_path), "model_card")
        mlflow.log_artifact(str(req.confusion_png), "model_card")
        mlflow.log_artifact(str(lineage_path))
        _log_serving(serving)
    record |= {"version": str(version_), "model_uri": f"models:/{req.name}@{decision.alias}"}
    for key, tag in {**tags, **_gate_tags(record), METRIC_TAG.format(metric=req.metric): value,
                     **({BASELINE_TAG.format(metric=req.metric): baseline} if baseline is not None else {})
                     }.items():
        client.set_model_version_tag(req.name, version_, key, str(tag))
    # The whole card, its confusion matrix served from the version's own artifacts (the registry UI
    # shows an image only from a URL: a path beside the card does not resolve there).
    image = model_card.version_artifact_url(req.name, str(version_), f"artifacts/{req.confusion_png.name}")
    client.update_model_version(req.name, version_, description=model_card.registry_description(card, image))
    registry.apply(client, req.name, version_, decision, champion, req.by)
    registry.describe_model(client, req.name, labels, req.metric)
    return record, card


def _serving(req: Request, work: Path) -> tuple[serve_format.Choice, Path]:
    """The serving format, checked on the test rows."""
    choice, folder = serve_format.choose(req.serve_format, req.classifier, req.test_inputs, work)
    print(f"register: serves {choice.format}: {choice.reason}")
    return choice, folder


def _log_serving(choice: serve_format.Choice) -> None:
    """The format and its agreement on the register run: a tag to filter by, a metric to plot."""
    mlflow.set_tags({SERVE_FORMAT_TAG: choice.format, SERVE_REASON_TAG: choice.reason[:5000]})
    mlflow.log_metric("serve_agreement", choice.agreement)
    for name, trial in choice.trials.items():
        if trial.rows_per_s:
            mlflow.log_metric(f"serve_rows_per_s.{name}", trial.rows_per_s)
        if trial.one_input_ms:
            mlflow.log_metric(f"serve_one_input_ms.{name}", trial.one_input_ms)


def _as_registered(req: Request, client: MlflowClient, version_: str, value: float,
                   baseline: float | None) -> tuple[dict, str]:
    """The record and card of a version that is already the champion, from what its own
    registration tagged: nothing in the registry changes, and no audit line is added."""
    tags = client.get_model_version(req.name, version_).tags
    stored = tags.get(CHAMPION_STORED_TAG)
    compared = gate.ChampionScore(
        tags.get(CHAMPION_VERSION_TAG), _number(tags.get(CHAMPION_SAME_ROWS_TAG)),
        _number(stored), tags.get(CHAMPION_UNSCORED_TAG))
    record = _record(req, Decision("champion", tags.get(REASON_TAG, "champion")), compared, value, baseline)
    record["serve_format"] = tags.get(SERVE_FORMAT_TAG, "torch")
    req.card.decision = record
    record |= {"version": str(version_), "model_uri": f"models:/{req.name}@champion"}
    return record, model_card.render(req.card)


def _number(text: str | None) -> float | None:
    return None if text in (None, "None") else float(text)


def _decide(req: Request, champion: gate.ChampionScore, value: float, baseline: float | None) -> Decision:
    decision = decide(req.metric, value, champion.value, req.min_delta, baseline, req.require_beat_baseline)
    if champion.version is not None and champion.value is None:
        reason = decision.reason.replace("no champion yet", "no comparable champion", 1)
        return Decision(decision.alias, f"{reason} (champion version {champion.version} was not compared: "
                                        f"{champion.unscored_reason}; this model's own test result decided)")
    if champion.value is not None:
        return Decision(decision.alias, f"{decision.reason} (both on this run's {len(req.test_inputs)} test rows)")
    return decision


def _record(req: Request, decision: Decision, champion: gate.ChampionScore, value: float,
            baseline: float | None) -> dict:
    """registration.json: what was decided and on what numbers."""
    return {"model_name": req.name, "alias": decision.alias, "reason": decision.reason, "metric": req.metric,
            "value": value, "baseline_value": baseline, "require_beat_baseline": req.require_beat_baseline,
            "min_delta": req.min_delta, "champion_version": champion.version, "champion_value": champion.value,
            "champion_stored_value": champion.stored_value, "champion_unscored_reason": champion.unscored_reason,
            "test_digest": req.lineage["data"]["test_digest"],
            # the version's tags.SOURCE_TAG: which version of the store's is this one (store.holds)
            "source_digest": req.digest,
            # the names of earlier releases, which the summary and older readers use
            "previous_champion_version": champion.version, "previous_champion_value": champion.value}


def _gate_tags(record: dict) -> dict:
    tags = {REASON_TAG: record["reason"]}
    if record["champion_version"] is not None:
        tags |= {CHAMPION_VERSION_TAG: record["champion_version"],
                 CHAMPION_STORED_TAG: record["champion_stored_value"]}
        if record["champion_value"] is not None:
            tags[CHAMPION_SAME_ROWS_TAG] = record["champion_value"]
        else:
            tags[CHAMPION_UNSCORED_TAG] = record["champion_unscored_reason"]
    return tags
