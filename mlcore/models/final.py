"""The final classifier from the search's best trial: trained afresh with its settings,
retrained on train + validation, or the trial's own model reused as it is."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mlcore.config import FinetuneConfig, SearchSpace
from mlcore.config.training import to_settings
from mlcore.engine.loop import FitResult
from mlcore.engine.settings import TrainSettings
from mlcore.errors import UserError
from mlcore.metrics import macro_f1
from mlcore.models import calibration

# Settings the search can sample (search.space); a searched one is taken from the best trial.
SEARCHED = SearchSpace.settings_names()


def settings_for(f: FinetuneConfig, best: dict, source: Path) -> TrainSettings:
    """finetune's settings: its own section, the best trial's searched settings, and the
    best learning rate and optimizer unless finetune sets them. Retraining on train + val
    runs for as many epochs as the best evaluation took (a mid-epoch best rounds up), with
    no early stopping: no held-out rows are left to stop on."""
    searched = {k: best[k] for k in SEARCHED if k in best}
    settings = to_settings(
        f, **searched, learning_rate=f.learning_rate or best["learning_rate"],
        optimizer=f.optimizer or best["optimizer"])
    if not f.retrain_on_train_val:
        return settings
    if not best.get("best_epoch"):
        raise UserError(f"{source}: no best_epoch, which finetune.retrain_on_train_val needs. "
                        f"Rerun the search (`dvc repro -f search`) or set finetune.retrain_on_train_val: false.")
    return dataclasses.replace(settings, epochs=max(1, math.ceil(best["best_epoch"] - 1e-9)), patience=None)


def reuse(kind, model_dir: Path, val, device: torch.device, processor, best: dict, precision_name: str):
    """The search's best trial model as it is (finetune.reuse_best_trial), scored on val with
    the precision the trial was scored with. `kind`: the modality (mlcore.modality)."""
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: missing, but finetune.reuse_best_trial is true. The search ships the model "
                        f"it kept only when that is the picked trial's (its output says when not, e.g. after "
                        f"search.tie_tolerance changed), and searches older than this feature keep none: rerun the "
                        f"search (`dvc repro -f search`), or set finetune.reuse_best_trial: false to retrain.")
    model, _ = kind.load_classifier(model_dir, key="finetune.reuse_best_trial")
    preds = kind.predict_logits(model.to(device), val, device, processor, precision_name=precision_name).argmax(1)
    return model, FitResult(best_epoch=best.get("best_epoch") or 0, best_score=macro_f1(val.labels, preds))


def train(kind, checkpoint: Path, label2id: dict[str, int], train_set, val, settings: TrainSettings,
          device: torch.device, retrain: bool, on_epoch: Callable[[dict], None] | None = None,
          checkpoint_dir: Path | None = None, fingerprint: str = "", processor=None):
    """A fresh head trained on train (the best evaluation kept), or on train + val (the last
    epoch kept: validation scores are logged but select nothing)."""
    model, result = kind.finetune(checkpoint, label2id, kind.joined(train_set, val) if retrain else train_set, val,
                                  settings, device, on_epoch=on_epoch, checkpoint_dir=checkpoint_dir,
                                  fingerprint=fingerprint + ("-train+val" if retrain else ""), keep_best=not retrain,
                                  processor=processor)
    if retrain:
        result.best_epoch, result.best_score = settings.epochs, result.history[-1]["val_macro_f1"]
    return model, result


def summary(result: FitResult, settings: TrainSettings, f: FinetuneConfig) -> dict:
    return {"best_epoch": result.best_epoch, "best_val_macro_f1": result.best_score,
            "epochs_run": result.history[-1]["epoch"] if result.history else 0, "stopped_early": result.stopped_early,
            "learning_rate": settings.learning_rate, "optimizer": settings.optimizer,
            "resumed_from_epoch": result.resumed_from_epoch,
            "trained_on": "train+val" if f.retrain_on_train_val else "train",
            "tracking_overhead_pct": 100 * result.tracking_seconds / max(result.train_seconds, 1e-9)}


def calibrate(kind, model, val, device: torch.device, processor, seen_in_training: bool) -> dict:
    """Fit the temperature on validation logits (fp32, as the MLflow model scores); the caller stores
    it with the saved model (`calibration.store`). With retraining on train + val those rows were
    trained on, so T comes out lower than it should."""
    logits = kind.predict_logits(model.to(device), val, device, processor)
    labels = np.asarray(val.labels)
    temperature = calibration.fit_temperature(logits, labels)
    fitted = calibration.report(logits, labels, temperature)
    return {"temperature": temperature, "val_ece_uncalibrated": fitted["ece_uncalibrated"], "val_ece": fitted["ece"],
            "temperature_fitted_on": "val (also trained on)" if seen_in_training else "val"}
