"""Temperature scaling and the expected calibration error (pure functions), and the audit's rollback rule."""
from __future__ import annotations

import numpy as np
import pytest

from mlcore.models import calibration
from mlcore.tracking.audit import rollback_target


def _sampled(true_t: float, n: int = 20_000, seed: int = 0):
    """Logits whose labels are drawn from softmax(logits / true_t): T = true_t calibrates them."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, 3))
    probs = calibration.softmax(logits, true_t)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_with(true_t):
    logits, labels = _sampled(true_t)
    fitted = calibration.fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.08)
    report = calibration.report(logits, labels, fitted)
    assert report["ece"] < 0.02  # calibrated once scaled
    if true_t != 1.0:
        assert report["ece"] < report["ece_uncalibrated"]


def test_ece_is_zero_when_confidence_equals_accuracy_and_large_when_overconfident():
    probs = np.array([[0.75, 0.25]] * 4)
    assert calibration.expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    assert calibration.expected_calibration_error(np.array([[0.99, 0.01]] * 2), np.array([0, 1])) == \
        pytest.approx(0.49)
    assert calibration.fit_temperature(np.zeros((0, 2)), np.zeros(0, dtype=int)) == 1.0


def test_fit_temperature_stays_bounded_on_degenerate_rows():
    logits = np.array([[10.0, -10.0], [-10.0, 10.0]])  # right with huge margins: NLL wants T -> 0
    assert calibration.T_MIN <= calibration.fit_temperature(logits, np.array([0, 1])) <= calibration.T_MAX


def test_store_and_read_back(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    assert calibration.stored(tmp_path) == 1.0  # a model from before calibration
    calibration.store(tmp_path, 1.7)
    assert calibration.stored(tmp_path) == 1.7


def test_rollback_walks_back_through_promotions_not_rollbacks():
    lines = [{"action": "promote", "from": None, "to": "1"}, {"action": "promote", "from": "1", "to": "2"},
             {"action": "keep", "from": "2", "to": "2"}, {"action": "promote", "from": "2", "to": "3"},
             {"action": "rollback", "from": "3", "to": "2"}]
    assert rollback_target(lines, "3") == "2"
    assert rollback_target(lines, "2") == "1"  # not back to 3: a rollback never undoes a rollback
    assert rollback_target(lines, "1") is None
    assert rollback_target(lines + [{"action": "manual-promote", "from": "1", "to": "7"}], "7") == "1"
