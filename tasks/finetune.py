"""finetune: train the final classifier with the search's best settings (or overrides
from params.yaml), early-stopping on validation macro-F1 and keeping the best epoch.

Or, instead: ship the search's best trial model as it is (finetune.reuse_best_trial),
or retrain on train + validation for the best trial's epoch count
(finetune.retrain_on_train_val)."""
from __future__ import annotations

import dataclasses
import math
import sys

import pandas as pd

from mlcore.engine import distributed
from mlcore.models import modeling
from mlcore.config import Config
from mlcore.engine.device import configure_threads, resolve_device
from mlcore.data.hashing import files_digest
from mlcore.models.classifier import encode_split, finetune, joined, load_tokenizer
from mlcore.tracking import runs
from mlcore.errors import UserError
from mlcore.metrics import macro_f1
from mlcore.engine.settings import TrainSettings
from mlcore.engine.loop import FitResult
from mlcore.models.classifier import predict_logits
from tasks import _io
from tasks import _paths as P
from tasks._runner import as_task, cli

STAGE = "finetune"


# Settings the search can sample (search.space); a searched one is taken from the best trial.
SEARCHED = ("weight_decay", "warmup", "layerwise_lr_decay", "strategy", "freeze_layers", "batch_size", "schedule", "momentum")


def settings_for(cfg: Config, best: dict) -> TrainSettings:
    f = cfg.finetune
    searched = {k: best[k] for k in SEARCHED if k in best}
    return TrainSettings.from_section(
        f, **searched, learning_rate=f.learning_rate or best["learning_rate"], optimizer=f.optimizer or best["optimizer"])


def _best_trial_model(val, device, pad_id: int):
    """The search's best trial model as it is (finetune.reuse_best_trial), scored on val."""
    if not P.BEST_TRIAL_MODEL.is_dir():
        raise UserError(f"{P.BEST_TRIAL_MODEL}: missing, but finetune.reuse_best_trial is true. The search keeps its "
                        f"best trial's model from this version on: rerun the search (`dvc repro -f search`), "
                        f"or set finetune.reuse_best_trial: false to retrain.")
    model, _ = modeling.load_classifier(P.BEST_TRIAL_MODEL, key="finetune.reuse_best_trial")
    model.to(device)
    preds = predict_logits(model, val, device, pad_id=pad_id).argmax(1)
    trial = _io.read_json(P.BEST_PARAMS, "search")
    return model, FitResult(best_epoch=trial.get("best_epoch") or 0, best_score=macro_f1(val.labels, preds))


def retrain_settings(settings: TrainSettings, best: dict) -> TrainSettings:
    """The best trial's settings for as many epochs as its best evaluation took (a
    mid-epoch best rounds up), with no early stopping: no held-out rows are left."""
    if not best.get("best_epoch"):
        raise UserError(f"{P.BEST_PARAMS}: no best_epoch, which finetune.retrain_on_train_val needs. "
                        f"Rerun the search (`dvc repro -f search`) or set finetune.retrain_on_train_val: false.")
    return dataclasses.replace(settings, epochs=max(1, math.ceil(best["best_epoch"] - 1e-9)), patience=None)


def run(cfg: Config, parent_run_id: str | None = None) -> dict:
    f = cfg.finetune
    configure_threads(cfg.runtime.num_threads)
    device = distributed.setup(resolve_device(cfg.device()))
    label2id = _io.label_map()
    best = _io.read_json(P.BEST_PARAMS, "search")
    settings = settings_for(cfg, best)
    if f.retrain_on_train_val:
        settings = retrain_settings(settings, best)
    tokenizer = load_tokenizer(_io.require(P.PRETRAINED, "pretrain"))
    train = encode_split(tokenizer, _io.read_split(P.TRAIN), label2id, f.max_length)
    val = encode_split(tokenizer, _io.read_split(P.VAL), label2id, f.max_length)
    with runs.stage_run(cfg, STAGE, parent_run_id):
        runs.log_params(f.model_dump() | {"used.learning_rate": settings.learning_rate, "used.optimizer": settings.optimizer,
                                          "used.epochs": settings.epochs, "device": str(device)})
        if f.reuse_best_trial:
            model, result = _best_trial_model(val, device, tokenizer.pad_token_id)
        else:
            retrain = f.retrain_on_train_val
            inputs = files_digest([P.TRAIN, P.VAL, P.LABEL_MAP, *sorted(P.PRETRAINED.glob("*"))])
            # Retraining on train + val: the validation scores are logged but select nothing.
            model, result = finetune(P.PRETRAINED, label2id, joined(train, val) if retrain else train, val, settings,
                                     device, on_epoch=lambda e: runs.log_metrics(e, step=e["evaluation"]),
                                     checkpoint_dir=P.CHECKPOINTS / STAGE,
                                     fingerprint=inputs + ("-train+val" if retrain else ""), keep_best=not retrain)
            if retrain:
                result.best_epoch, result.best_score = settings.epochs, result.history[-1]["val_macro_f1"]
        if not distributed.is_main():
            return {"rank": distributed.rank()}  # rank 0 writes the outputs
        tokenizer.model_max_length = f.max_length  # consumers truncate as training did
        summary = {"best_epoch": result.best_epoch, "best_val_macro_f1": result.best_score,
                   "epochs_run": result.history[-1]["epoch"] if result.history else 0, "stopped_early": result.stopped_early,
                   "learning_rate": settings.learning_rate, "optimizer": settings.optimizer,
                   "resumed_from_epoch": result.resumed_from_epoch,
                   "trained_on": "train+val" if f.retrain_on_train_val else "train",
                   "tracking_overhead_pct": 100 * result.tracking_seconds / max(result.train_seconds, 1e-9)}
        _io.fresh_dir(P.CLASSIFIER)
        modeling.save(model.cpu(), tokenizer, P.CLASSIFIER, extra={"stage": STAGE, **summary})
        _io.write_json(P.FINETUNE_REPORT, summary)
        pd.DataFrame(result.history).to_csv(P.FINETUNE_HISTORY, index=False)
        runs.log_metrics({"best_epoch": result.best_epoch, "best_val_macro_f1": result.best_score})
        runs.log_artifact(P.FINETUNE_HISTORY)
        _io.clear_checkpoint(P.CHECKPOINTS / STAGE)
    return {"best_epoch": result.best_epoch, "best_val_macro_f1": round(result.best_score, 4)}


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
