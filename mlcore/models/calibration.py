"""Temperature scaling (Guo et al., 2017) and the expected calibration error.

A fine-tuned classifier is usually over-confident: its softmax says 0.99 where it is right
far less often. One scalar T, fitted on held-out logits by minimising the negative
log-likelihood of softmax(logits / T), fixes most of that without changing a single
prediction (argmax is the same for every T > 0). The fitted T is stored in the saved model's
config.json (`temperature`, see `store`), which the MLflow model applies to its scores.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

# T outside these bounds means the held-out set is degenerate (a handful of rows, or every
# row right with huge margins); the bound keeps the scores usable rather than 0/1.
T_MIN, T_MAX = 0.05, 20.0
ECE_BINS = 15


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) on these rows (1.0 with no rows)."""
    if len(labels) == 0:
        return 1.0
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # T = exp(log_t): positive by construction
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.detach().exp())
    return min(max(t, T_MIN), T_MAX) if math.isfinite(t) else 1.0


def store(model_dir: str | Path, temperature: float) -> None:
    """Write T into the saved model's config.json as `temperature`. Written into the file, not the
    config object: transformers 5 counts `temperature` as a generation parameter, refuses to save
    it on a classifier's config and drops it when loading, so every reader takes it from the file."""
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text())
    config["temperature"] = float(temperature)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def stored(model_dir: str | Path) -> float:
    """The saved model's temperature (1.0 for a model saved before calibration existed)."""
    value = json.loads((Path(model_dir) / "config.json").read_text()).get("temperature")
    return float(value) if value else 1.0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """The gap between confidence and accuracy, averaged over equal-width confidence bins
    weighted by their share of rows (0 is perfectly calibrated)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    if len(labels) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def report(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """ECE before (T = 1) and after temperature scaling, and the NLL after, on these rows."""
    before, after = softmax(logits), softmax(logits, temperature)
    nll = -np.log(np.clip(after[np.arange(len(labels)), labels], 1e-12, None)).mean() if len(labels) else 0.0
    return {"temperature": float(temperature), "ece_uncalibrated": expected_calibration_error(before, labels),
            "ece": expected_calibration_error(after, labels), "nll": float(nll), "ece_bins": ECE_BINS}
