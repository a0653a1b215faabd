"""The text classifier: a fresh head on a pretrained checkpoint, trained on the engine with
weighted, label-smoothed cross-entropy and scored by validation macro-F1 (the best
evaluation's weights are kept), and its batched, length-sorted inference."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer

from mlcore.engine import precision, text_augment
from mlcore.engine.batching import Encoded, batches, by_length, encode, epoch_order, loader
from mlcore.engine.loop import FitResult, Job, fit
from mlcore.engine.settings import TrainSettings
from mlcore.metrics import macro_f1
from mlcore.models import classifier_pooling, masking, modeling

# augment: auto for text. Off: on 500 rows of SST-2 (3 seeds) no strength or op set beat no
# augmentation; masking alone tied, all four ops lost 1.6-2 points
# (docs/benchmarks.md#text-augmentation-on-500-sst-2-rows).
AUGMENT_DEFAULT = 0.0


def load_tokenizer(checkpoint: str | Path):
    return AutoTokenizer.from_pretrained(modeling.check_checkpoint(checkpoint, "model"), trust_remote_code=False)


def encode_split(tokenizer, df: pd.DataFrame, label2id: dict[str, int], max_length: int) -> Encoded:
    unknown = set(df["label"]) - set(label2id)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not in the label map")
    return encode(tokenizer, df["text"].tolist(), max_length, df["label"].map(label2id).tolist())


def augment_of(s: TrainSettings, tokenizer) -> text_augment.TokenAugment | None:
    """The training batches' augmentation that the settings ask for (None: off)."""
    strength = AUGMENT_DEFAULT if s.augment == "auto" else float(s.augment)
    if strength == 0:
        return None
    # all-MiniLM-L6-v2 ships a [MASK] token; a tokenizer without one masks with [UNK].
    mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    try:
        continuation = masking.continuation_ids(tokenizer).numpy()
    except ValueError:  # a vocabulary without word markers: each token counts as a word
        continuation = None
    return text_augment.TokenAugment(strength, tuple(s.augment_text_ops), mask_id, continuation)


def joined(a: Encoded, b: Encoded) -> Encoded:
    """Two encoded splits as one training set (retraining on train + validation)."""
    return Encoded(a.input_ids + b.input_ids, np.concatenate([a.labels, b.labels]))


class ClassifierLoss(torch.nn.Module):
    """The loss as a module, so DDP and torch.compile see the whole forward pass."""

    def __init__(self, model, weight: torch.Tensor | None, label_smoothing: float):
        super().__init__()
        self.model, self.label_smoothing = model, label_smoothing
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, input_ids, attention_mask, labels, encoder_mask=None):
        logits = classifier_pooling.logits(self.model, input_ids, attention_mask, encoder_mask)
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
                   precision_name: str = "fp32") -> np.ndarray:
    """Logits in the original row order; batches are length-sorted to minimise padding.
    fp32 unless asked: evaluate's numbers are then the ones the MLflow model (fp32) serves."""
    model.eval()
    mode = precision.resolve(precision_name, device)
    out = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    for idx, batch in batches(Encoded(data.input_ids), batch_size, pad_id, order=by_length(data)):
        batch = {k: v.to(device) for k, v in batch.items()}
        with precision.autocast(mode, device):
            logits = classifier_pooling.logits(model, batch["input_ids"], batch["attention_mask"])
        out[idx] = logits.float().cpu().numpy()
    return out


def train_classifier(
    model, train: Encoded, val: Encoded, s: TrainSettings, device: torch.device, pad_id: int,
    on_epoch: Callable[[dict], None] | None = None, checkpoint_dir: Path | None = None, fingerprint: str = "",
    keep_best: bool = True, augment: text_augment.TokenAugment | None = None,
    loss_module: torch.nn.Module | None = None,
) -> FitResult:
    """Train, validating each epoch; on return `model` holds the best epoch's weights
    (the last epoch's with `keep_best=False`). `augment`: training batches only (None: off).
    `loss_module`: wraps `model` (default: the weighted, label-smoothed cross-entropy;
    distillation passes its own).

    `on_epoch` gets each epoch's metrics and may raise (for example optuna.TrialPruned).
    """
    n_classes = model.config.num_labels
    weight = (balanced_class_weights(train.labels, n_classes) if s.class_weights == "auto" and loss_module is None
              else None)

    def epoch_batches(epoch: int):
        # The order is the unaugmented rows': augmentation off trains exactly as without it.
        rows = text_augment.augmented(train, augment, s.seed, epoch)
        return loader(rows, s.batch_size, pad_id, epoch_order(train, s, epoch), s.num_workers, device)

    def evaluate(m) -> dict[str, float]:
        preds = predict_logits(m, val, device, s.eval_batch_size, pad_id, s.precision).argmax(1)
        return {"val_macro_f1": macro_f1(val.labels, preds), "val_accuracy": float((preds == val.labels).mean())}

    loss_module = loss_module or ClassifierLoss(model, weight, s.label_smoothing)
    job = Job(model=model, loss_module=loss_module, batches=epoch_batches,
              n_batches=-(-len(train) // s.batch_size), evaluate=evaluate, score="val_macro_f1",
              keep_best=keep_best)
    return fit(job, s, device, desc="epoch", on_epoch=on_epoch, checkpoint_dir=checkpoint_dir, fingerprint=fingerprint)


def finetune(
    checkpoint: str | Path, label2id: dict[str, int], train: Encoded, val: Encoded, settings: TrainSettings,
    device: torch.device, on_epoch: Callable[[dict], None] | None = None, checkpoint_dir: Path | None = None,
    fingerprint: str = "", keep_best: bool = True, pooling: str | None = None, tokenizer=None,
) -> tuple[torch.nn.Module, FitResult]:
    """A fresh classifier head on `checkpoint`, trained; returns (model at its best epoch,
    or its last with `keep_best=False`, and the result). `pooling` (cls, mean) overrides the
    checkpoint's own (its config's classifier_pooling, which the pretrain stage sets). `tokenizer`:
    the checkpoint's, when the caller has it loaded already."""
    torch.manual_seed(settings.seed)  # the head's initialisation is part of the seeded run
    model, tokenizer = modeling.load_classifier(checkpoint, label2id, pooling=pooling, tokenizer=tokenizer)
    result = train_classifier(model, train, val, settings, device, tokenizer.pad_token_id,
                              on_epoch, checkpoint_dir, fingerprint, keep_best, augment_of(settings, tokenizer))
    return model, result
