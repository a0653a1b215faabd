"""finetune: train the final classifier with the search's best settings (or overrides
from params.yaml), early-stopping on validation macro-F1 and keeping the best epoch.

Or, instead: ship the search's best trial model as it is (finetune.reuse_best_trial),
or retrain on train + validation for the best trial's epoch count
(finetune.retrain_on_train_val)."""
from __future__ import annotations

import sys

from mlcore import modality
from mlcore.data.hashing import files_digest
from mlcore.engine import distributed, precision
from mlcore.models import calibration, final
from mlcore.tracking import runs
from tasks import _io
from tasks import _paths as P
from tasks._context import StageContext
from tasks._runner import as_task, cli

STAGE = "finetune"


def run(ctx: StageContext) -> dict:
    cfg, parent_run_id = ctx.cfg, ctx.parent_run_id
    f = cfg.finetune
    device = distributed.setup(ctx.device)
    label2id, best = _io.label_map(), _io.read_json(P.BEST_PARAMS, "search")
    kind = modality.of_splits(P.TRAIN)
    settings = kind.adjusted(final.settings_for(f, best, P.BEST_PARAMS), P.PRETRAINED, device)
    processor = kind.processor(_io.require(P.PRETRAINED, "pretrain"))
    train_df, val_df = _io.read_split(P.TRAIN), _io.read_split(P.VAL)
    shape = kind.choose(f.max_length, P.PRETRAINED, processor, train_df)
    train, val = (kind.encode(processor, df, label2id, shape) for df in (train_df, val_df))
    with runs.stage_run(cfg, STAGE, parent_run_id) as active:
        runs.log_params(_params(f, settings, shape, device))
        runs.log_datasets({"train": train_df, "val": val_df}, P.SPLITS)
        model, result = _fit(kind, f, best, settings, label2id, train, val, device, processor)
        if not distributed.is_main():
            return {"rank": distributed.rank()}  # rank 0 writes the outputs
        numerics = precision.numerics(device, precision.resolve(settings.precision, device))  # for the lineage
        summary = final.summary(result, settings, f) | shape.report() | final.calibrate(
            kind, model, val, device, processor, f.retrain_on_train_val) | {
            "device": str(device), "precision": numerics["precision"], "numerics": numerics,
            "mlflow_run_id": active.info.run_id if active else None}
        with _io.replacing(P.CLASSIFIER) as out:
            kind.save(model.cpu(), processor, out, extra={"stage": STAGE, **summary}, shape=shape)
            calibration.store(out, summary["temperature"])
        _io.write_json(P.FINETUNE_REPORT, summary)
        _io.write_csv(P.FINETUNE_HISTORY, result.history)
        runs.log_metrics({"best_epoch": result.best_epoch, "best_val_macro_f1": result.best_score,
                          **{k: summary[k] for k in ("temperature", "val_ece", "val_ece_uncalibrated")}})
        runs.set_tags(runs.numerics_tags(numerics))
        runs.log_artifact(P.FINETUNE_HISTORY)
        _io.clear_checkpoint(P.CHECKPOINTS / STAGE)
    return {"best_epoch": result.best_epoch, "best_val_macro_f1": round(result.best_score, 4)}


def _params(f, settings, shape, device) -> dict:
    """The run's params: the section, the input shape, and the settings used."""
    picked = {"learning_rate": settings.learning_rate, "optimizer": settings.optimizer}
    return f.model_dump() | shape.report() | {
        # a setting left null takes the search's pick: logged as the value used, as trials log theirs
        **{k: v for k, v in picked.items() if getattr(f, k) is None},
        "used.learning_rate": settings.learning_rate, "used.optimizer": settings.optimizer,
        "used.epochs": settings.epochs, "device": str(device)}


def _fit(kind, f, best, settings, label2id, train, val, device, processor):
    """The search's best trial model as it is, or one trained with the best settings."""
    if f.reuse_best_trial:
        return final.reuse(kind, P.BEST_TRIAL_MODEL, val, device, processor, best, settings.precision)
    inputs = files_digest([P.TRAIN, P.VAL, P.LABEL_MAP, *sorted(P.PRETRAINED.glob("*"))])
    return final.train(kind, P.PRETRAINED, label2id, train, val, settings, device, f.retrain_on_train_val,
                       lambda e: runs.log_metrics(e, step=e["evaluation"]), P.CHECKPOINTS / STAGE, inputs,
                       processor)


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
