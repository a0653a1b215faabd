"""The classifier fine-tuning loop: dynamic padding, per-epoch validation, early stopping.

The best epoch's weights (by validation macro-F1) are kept, not the last epoch's.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from mlcore.batching import Encoded, batches, by_length, length_grouped_order
from mlcore.device import autocast, seed_everything
from mlcore.metrics import macro_f1
from mlcore.optim import backward_step, linear_warmup_decay, make_optimizer


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    patience: int | None = None  # None: no early stopping
    min_delta: float = 0.0
    seed: int = 42
    eval_batch_size: int = 256


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    val_macro_f1: float
    val_accuracy: float
    learning_rate: float
    samples_per_s: float


@dataclass
class TrainResult:
    best_epoch: int
    best_val_macro_f1: float
    history: list[EpochResult] = field(default_factory=list)
    stopped_early: bool = False

    def history_rows(self) -> list[dict]:
        return [asdict(h) for h in self.history]


@torch.inference_mode()
def predict_logits(model, data: Encoded, device: torch.device, batch_size: int = 256, pad_id: int = 0) -> np.ndarray:
    """Logits in the original row order; batches are length-sorted to minimise padding."""
    model.eval()
    out = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    for idx, batch in batches(Encoded(data.input_ids), batch_size, pad_id, order=by_length(data)):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device):
            logits = model(**batch).logits
        out[idx] = logits.float().cpu().numpy()
    return out


def _run_epoch(model, optimizer, scheduler, train: Encoded, s: TrainSettings, device, pad_id, rng, desc) -> tuple[float, float]:
    model.train()
    order = length_grouped_order(train, s.batch_size, rng)
    total_loss, seen, start = 0.0, 0, time.perf_counter()
    bar = tqdm(total=len(train), desc=desc, unit="ex", leave=False, mininterval=1.0)
    for _, batch in batches(train, s.batch_size, pad_id, order=order):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device):
            loss = model(**batch).loss
        if not torch.isfinite(loss):
            bar.close()
            raise FloatingPointError(f"training loss became {loss.item()} (learning rate {s.learning_rate} too high?)")
        backward_step(model, optimizer, scheduler, loss)
        n = len(batch["input_ids"])
        total_loss += loss.item() * n
        seen += n
        bar.update(n)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", ex_per_s=f"{seen / (time.perf_counter() - start):.0f}")
    bar.close()
    return total_loss / max(seen, 1), seen / (time.perf_counter() - start)


def train_classifier(
    model,
    train: Encoded,
    val: Encoded,
    s: TrainSettings,
    device: torch.device,
    pad_id: int,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> TrainResult:
    """Train, validating each epoch; on return `model` holds the best epoch's weights.

    `on_epoch` may raise (for example optuna.TrialPruned) to stop training.
    """
    seed_everything(s.seed)
    rng = np.random.default_rng(s.seed)
    model.to(device)
    optimizer = make_optimizer(s.optimizer, model, s.learning_rate, s.weight_decay)
    steps = s.epochs * math.ceil(len(train) / s.batch_size)
    scheduler = linear_warmup_decay(optimizer, steps, s.warmup_fraction)
    result = TrainResult(best_epoch=0, best_val_macro_f1=-1.0)
    best_state, waited = None, 0
    for epoch in range(1, s.epochs + 1):
        lr = scheduler.get_last_lr()[0]
        loss, speed = _run_epoch(model, optimizer, scheduler, train, s, device, pad_id, rng, f"epoch {epoch}/{s.epochs}")
        preds = predict_logits(model, val, device, s.eval_batch_size, pad_id).argmax(1)
        f1 = macro_f1(val.labels, preds)
        acc = float((preds == val.labels).mean())
        epoch_result = EpochResult(epoch, loss, f1, acc, lr, speed)
        result.history.append(epoch_result)
        if f1 > result.best_val_macro_f1 + s.min_delta or best_state is None:
            result.best_epoch, result.best_val_macro_f1, waited = epoch, f1, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            waited += 1
        if on_epoch is not None:
            on_epoch(epoch_result)
        if s.patience is not None and waited >= s.patience:
            result.stopped_early = epoch < s.epochs
            break
    model.load_state_dict(best_state)
    return result
