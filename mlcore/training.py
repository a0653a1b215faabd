"""Classifier fine-tuning on the engine: weighted, label-smoothed cross-entropy, and
validation macro-F1 each epoch (the best epoch's weights are kept, not the last's)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mlcore import precision
from mlcore.batching import Encoded, batches, by_length, epoch_order, loader
from mlcore.engine import FitResult, Job, fit
from mlcore.metrics import macro_f1
from mlcore.settings import TrainSettings

__all__ = ["TrainSettings", "TrainResult", "train_classifier", "predict_logits", "balanced_class_weights"]


@dataclass
class TrainResult:
    best_epoch: int
    best_val_macro_f1: float
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    tracking_seconds: float = 0.0
    train_seconds: float = 0.0


class ClassifierLoss(torch.nn.Module):
    """The loss as a module, so DDP and torch.compile see the whole forward pass."""

    def __init__(self, model, weight: torch.Tensor | None, label_smoothing: float):
        super().__init__()
        self.model, self.label_smoothing = model, label_smoothing
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, input_ids, attention_mask, labels):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return torch.nn.functional.cross_entropy(
            logits.float(), labels, weight=self.weight, label_smoothing=self.label_smoothing)


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """n / (k * count_c) over the k classes present, as scikit-learn's "balanced": every class
    carries equal total weight.
    A class absent from training keeps weight 1 (it has no examples to reweight)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = int((counts > 0).sum())
    weights = np.where(counts > 0, len(labels) / (present * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


@torch.inference_mode()
def predict_logits(model, data: Encoded, device: torch.device, batch_size: int = 256, pad_id: int = 0,
                   precision_name: str = "auto") -> np.ndarray:
    """Logits in the original row order; batches are length-sorted to minimise padding."""
    model.eval()
    mode = precision.resolve(precision_name, device)
    out = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    for idx, batch in batches(Encoded(data.input_ids), batch_size, pad_id, order=by_length(data)):
        batch = {k: v.to(device) for k, v in batch.items()}
        with precision.autocast(mode, device):
            logits = model(**batch).logits
        out[idx] = logits.float().cpu().numpy()
    return out


def train_classifier(
    model, train: Encoded, val: Encoded, s: TrainSettings, device: torch.device, pad_id: int,
    on_epoch: Callable[[dict], None] | None = None, checkpoint_dir: Path | None = None, fingerprint: str = "",
    keep_best: bool = True,
) -> TrainResult:
    """Train, validating each epoch; on return `model` holds the best epoch's weights
    (the last epoch's with `keep_best=False`).

    `on_epoch` gets each epoch's metrics and may raise (for example optuna.TrialPruned).
    """
    n_classes = model.config.num_labels
    weight = balanced_class_weights(train.labels, n_classes) if s.class_weights == "auto" else None

    def epoch_batches(epoch: int):
        return loader(train, s.batch_size, pad_id, epoch_order(train, s, epoch), s.num_workers, device)

    def evaluate(m) -> dict[str, float]:
        preds = predict_logits(m, val, device, s.eval_batch_size, pad_id, s.precision).argmax(1)
        return {"val_macro_f1": macro_f1(val.labels, preds), "val_accuracy": float((preds == val.labels).mean())}

    job = Job(model=model, loss_module=ClassifierLoss(model, weight, s.label_smoothing), batches=epoch_batches,
              n_batches=-(-len(train) // s.batch_size), evaluate=evaluate, score="val_macro_f1",
              keep_best=keep_best)
    fitted: FitResult = fit(job, s, device, desc="epoch", on_epoch=on_epoch,
                            checkpoint_dir=checkpoint_dir, fingerprint=fingerprint)
    return TrainResult(fitted.best_epoch, fitted.best_score, fitted.history, fitted.stopped_early,
                       fitted.resumed_from_epoch, fitted.tracking_seconds, fitted.train_seconds)
