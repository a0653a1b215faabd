"""The TF-IDF + logistic regression baseline (mlcore.models.baseline) and how the summary shows it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mlcore.errors import UserError
from mlcore.metrics import classification_report
from mlcore.models import baseline
from tests.conftest import make_reviews


def _split():
    reviews = make_reviews(n=120, seed=3)
    reviews = reviews[reviews["category"] != "plot"]
    labels = ["fresh", "rotten"]
    y = reviews["category"].map({"fresh": 0, "rotten": 1}).to_numpy()
    return reviews["text"].tolist(), y, labels


def test_baseline_report_has_the_classification_report_shape_and_is_deterministic():
    texts, y, labels = _split()
    report = baseline.evaluate(texts[:80], y[:80], texts[80:], y[80:], labels)
    assert report.keys() == classification_report(y[80:], y[80:], labels).keys()
    assert report["n"] == len(texts) - 80 and report["per_class"].keys() == {"fresh", "rotten"}
    assert report["accuracy"] > 0.9  # two class words per review: separable
    again = baseline.evaluate(texts[:80], y[:80], texts[80:], y[80:], labels)
    assert json.dumps(again) == json.dumps(report)  # the same fit, bit for bit
    assert baseline.headline(report) == {"baseline_accuracy": report["accuracy"],
                                         "baseline_macro_f1": report["macro_f1"]}


def test_baseline_learns_only_from_the_rows_it_is_given():
    train = ["good film", "good plot", "bad film", "bad plot"]
    model = baseline.fit(train, [0, 0, 1, 1])
    assert list(baseline.predict(model, ["good", "bad"])) == [0, 1]
    # "superb" is not in the training rows: no information, whichever way the intercept leans
    proba = model.predict_proba(["superb"])[0]
    assert np.allclose(proba, model.predict_proba([""])[0])


def test_baseline_without_a_shared_word_is_a_user_error():
    with pytest.raises(UserError, match="min_df=2"):
        baseline.fit(["alpha", "beta", "gamma"], [0, 1, 0])


def test_summary_shows_the_baseline_on_the_test_line_and_the_gate_reason(tmp_path, monkeypatch):
    from flows.summary import summary
    from mlcore.config import Config
    from tasks import _paths as P

    monkeypatch.chdir(tmp_path)
    P.REPORTS.mkdir()
    P.METRICS.write_text(json.dumps({"accuracy": 0.75, "macro_f1": 0.70, "macro_precision": 0.7,
                                     "macro_recall": 0.7, "n": 100, "baseline_accuracy": 0.80,
                                     "baseline_macro_f1": 0.78}))
    reason = "below baseline: macro_f1 0.7000 < baseline 0.7800"
    P.REGISTRATION.write_text(json.dumps({"model_name": "m", "version": "3", "alias": "challenger", "reason": reason,
                                          "metric": "macro_f1", "value": 0.70, "previous_champion_value": None}))
    monkeypatch.setattr("flows.summary.holds", lambda *args: True)  # the store check: tests/test_store.py
    lines = summary(Config(), {"evaluate": {"skipped": False}}).splitlines()
    test_line = next(line for line in lines if line.startswith("test:"))
    assert "TF-IDF baseline: accuracy 0.8000 (model -0.0500)  macro-F1 0.7800 (model -0.0800)" in test_line
    assert f"why:        {reason}" in lines
    assert "load it:    no champion yet; this version is mlflow.pyfunc.load_model('models:/m@challenger')" in lines
