"""The image classifier's training and inference on the engine: as the text classifier
(weighted, label-smoothed cross-entropy, scored by validation macro-F1, the best evaluation's
weights kept), with pixel batches and augmentation in place of token batches."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mlcore.engine import images, precision
from mlcore.engine.images import Augment, ImageSet
from mlcore.engine.loop import FitResult, Job, fit
from mlcore.engine.settings import TrainSettings
from mlcore.metrics import macro_f1
from mlcore.models import vision
from mlcore.models.classifier import balanced_class_weights


class ImageClassifierLoss(torch.nn.Module):
    """The loss as a module, so DDP and torch.compile see the whole forward pass."""

    def __init__(self, model, weight: torch.Tensor | None, label_smoothing: float):
        super().__init__()
        self.model, self.label_smoothing = model, label_smoothing
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, pixel_values, labels):
        return torch.nn.functional.cross_entropy(
            self.model(pixel_values).float(), labels, weight=self.weight, label_smoothing=self.label_smoothing)


def image_batches(model, data: ImageSet, batch_size: int, order: np.ndarray | None = None,
                  augment: Augment | None = None, seed: int = 0, epoch: int = 0):
    """`images.batches` with the input size and normalisation `model` was built for."""
    c = model.config
    return images.batches(data, batch_size, order, c.input_size, c.mean, c.std, augment, seed, epoch)


@torch.inference_mode()
def predict_logits(model, data: ImageSet, device: torch.device, batch_size: int = 256,
                   precision_name: str = "fp32") -> np.ndarray:
    """Logits in the rows' order. fp32 unless asked: evaluate's numbers are then the ones the
    MLflow model (fp32) serves."""
    model.eval()
    mode = precision.resolve(precision_name, device)
    out = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    for idx, batch in image_batches(model, ImageSet(data.pixels), batch_size):
        with precision.autocast(mode, device):
            logits = model(batch["pixel_values"].to(device, non_blocking=True))
        out[idx] = logits.float().cpu().numpy()
    return out


def train_classifier(
    model, train: ImageSet, val: ImageSet, s: TrainSettings, device: torch.device, augment: Augment | None,
    on_epoch: Callable[[dict], None] | None = None, checkpoint_dir: Path | None = None, fingerprint: str = "",
    keep_best: bool = True,
) -> FitResult:
    """Train, validating each epoch; on return `model` holds the best epoch's weights
    (the last epoch's with `keep_best=False`). `augment`: training batches only (None: off).

    `on_epoch` gets each epoch's metrics and may raise (for example optuna.TrialPruned).
    """
    weight = balanced_class_weights(train.labels, model.config.num_labels) if s.class_weights == "auto" else None

    def epoch_batches(epoch: int):
        order = images.epoch_order(len(train), s.seed, epoch)
        return (batch for _, batch in image_batches(model, train, s.batch_size, order, augment, s.seed, epoch))

    def evaluate(m) -> dict[str, float]:
        preds = predict_logits(m, val, device, s.eval_batch_size, s.precision).argmax(1)
        return {"val_macro_f1": macro_f1(val.labels, preds), "val_accuracy": float((preds == val.labels).mean())}

    job = Job(model=model, loss_module=ImageClassifierLoss(model, weight, s.label_smoothing), batches=epoch_batches,
              n_batches=-(-len(train) // s.batch_size), evaluate=evaluate, score="val_macro_f1",
              keep_best=keep_best)
    return fit(job, s, device, desc="epoch", on_epoch=on_epoch, checkpoint_dir=checkpoint_dir, fingerprint=fingerprint)


def finetune(
    checkpoint: str | Path, label2id: dict[str, int], train: ImageSet, val: ImageSet, settings: TrainSettings,
    device: torch.device, augment: Augment | None, on_epoch: Callable[[dict], None] | None = None,
    checkpoint_dir: Path | None = None, fingerprint: str = "", keep_best: bool = True,
) -> tuple[torch.nn.Module, FitResult]:
    """A fresh head for `label2id` on the image checkpoint `checkpoint`, trained; returns (the
    model at its best epoch, or its last with `keep_best=False`, and the result)."""
    torch.manual_seed(settings.seed)  # the head's initialisation is part of the seeded run
    model = vision.load(checkpoint, label2id)
    result = train_classifier(model, train, val, settings, device, augment, on_epoch, checkpoint_dir,
                              fingerprint, keep_best)
    return model, result
