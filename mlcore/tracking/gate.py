"""The fair half of the champion/challenger gate: the current champion scored on *this* run's
test rows, so both models are measured on the same rows.

The metric stored on the champion when it was registered came from its own run's test
split; scheduled retraining runs on new data, so that number measures something else. It
is kept only as history (`stored_value`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlcore.metrics import classification_report
from mlcore.tracking.advice import without_type_hint_advice
from mlcore.tracking.tags import METRIC_TAG


class ChampionScore(NamedTuple):
    version: str | None  # None: there is no champion
    value: float | None  # its metric on this run's test rows; None when it could not be scored
    stored_value: float | None  # the metric it was registered with (its own test split): history only
    unscored_reason: str | None = None  # why it could not be scored, when it could not


def score_champion(name: str, inputs: list[str] | pd.DataFrame, labels: list[str], label_names: list[str],
                   metric: str) -> ChampionScore:
    """Load `models:/<name>@champion` and score it on these rows (texts, or the input frame of
    images; labels by name). A champion that cannot be loaded, predicts another label set or fails
    to predict (a text model given images) is reported, not raised."""
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return ChampionScore(None, None, None)
    number = str(version.version)  # MLflow returns it as an int or a str depending on the call
    stored = version.tags.get(METRIC_TAG.format(metric=metric))
    stored_value = float(stored) if stored is not None else None
    try:
        import mlflow.pyfunc

        with without_type_hint_advice():
            model = mlflow.pyfunc.load_model(f"models:/{name}/{number}")
        frame = inputs if isinstance(inputs, pd.DataFrame) else pd.DataFrame({"text": list(inputs)})
        scored = model.predict(frame, params={"return_scores": True})
    except Exception as err:  # noqa: BLE001 - any failure of an old model is a finding, not a crash
        return ChampionScore(number, None, stored_value, f"could not load or score it: {_short(err)}")
    theirs = sorted(c.removeprefix("score_") for c in scored.columns if c.startswith("score_"))
    if theirs != sorted(label_names):
        return ChampionScore(number, None, stored_value,
                             f"its labels {theirs} differ from this run's {sorted(label_names)}")
    value = metric_on(list(scored["label"]), labels, label_names, metric)
    return ChampionScore(number, value, stored_value)


def metric_on(predicted: list[str], actual: list[str], label_names: list[str], metric: str) -> float:
    """`metric` ('accuracy' or 'macro_f1') of predicted against actual label names."""
    ids = {label: i for i, label in enumerate(label_names)}
    report = classification_report(np.array([ids[a] for a in actual]), np.array([ids.get(p, -1) for p in predicted]),
                                   label_names)
    return float(report[metric])


def _short(err: Exception) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."
