"""distill: optionally train a student classifier on the fine-tuned classifier's softened logits.

Off by default (distill.enabled: false): the stage then writes only a note that it is off, in
seconds, and register sees the teacher alone. On, the student starts from the teacher's own
layers (every other one, the bottom ones, or all of them), trains on the train texts plus the
unlabelled ones against the teacher's logits and the labels, early-stops on validation
macro-F1, and resumes from its last epoch after a kill. reports/distill.json compares both
models on validation and in batch-scoring speed; register.candidate picks which is registered.
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from mlcore import modality
from mlcore.config.training import to_settings
from mlcore.data.hashing import files_digest
from mlcore.engine import distributed
from mlcore.engine.batching import encode
from mlcore.errors import UserError
from mlcore.metrics import macro_f1
from mlcore.models import calibration, distillation, ensemble, final, modeling
from mlcore.tracking import runs
from tasks import _io
from tasks import _paths as P
from tasks._context import StageContext
from tasks._runner import as_task, cli

STAGE = "distill"
OFF_NOTE = "distill-off.json"  # all that models/student holds while the stage is off


def run(ctx: StageContext) -> dict:
    cfg, d = ctx.cfg, ctx.cfg.distill
    with runs.stage_run(cfg, STAGE, ctx.parent_run_id) as active:
        runs.log_params(d.model_dump())
        if not d.enabled:
            return _off()
        kind = modality.of_splits(P.TRAIN)
        if kind.name != "text":
            raise UserError("distill.enabled is true, but the data are images: distillation cuts a student from a "
                            "text encoder's layers and is built for text only (docs/distillation.md says why). "
                            "Set distill.enabled: false in params.yaml.")
        device = distributed.setup(ctx.device)
        teacher, tokenizer = kind.load_classifier(_io.require(P.CLASSIFIER, "finetune"), key="models/classifier")
        label2id = _io.label_map()
        train, transfer, val = _data(kind, tokenizer, label2id, d.unlabelled)
        teachers = [teacher, *_members(cfg, kind, tokenizer, label2id, train, val, device)]
        keep = distillation.kept_layers(d.student, teacher.config.num_hidden_layers, d.student_layers)
        student = distillation.make_student(teacher, keep, d.student_ffn, train, tokenizer.pad_token_id, teachers)
        settings, result = _train(d, student, teachers, transfer, val, device, tokenizer, keep)
        if not distributed.is_main():
            return {"rank": distributed.rank()}
        report = _report(kind, teachers, student, val, device, tokenizer, keep, result, settings, len(transfer)) | {
            "student_init": d.student, "alpha": d.alpha, "distill_temperature": d.temperature,
            "mlflow_run_id": active.info.run_id if active else None}
        with _io.replacing(P.STUDENT) as out:
            kind.save(student.cpu(), tokenizer, out, extra={"stage": STAGE, **report})
            calibration.store(out, report["temperature"])
        _io.write_json(P.DISTILL_REPORT, report)
        runs.log_metrics({k: v for k, v in report.items() if isinstance(v, float)})
        _io.clear_checkpoint(P.CHECKPOINTS / STAGE)
    return {k: report[k] for k in ("student_layers", "student_val_macro_f1", "teacher_val_macro_f1", "speedup")}


def _off() -> dict:
    """The stage switched off: a note in place of the student, nothing trained."""
    with _io.replacing(P.STUDENT) as out:
        _io.write_json(out / OFF_NOTE, {"enabled": False})
    _io.write_json(P.DISTILL_REPORT, {"enabled": False})
    return {"enabled": False}


def _inputs() -> str:
    return files_digest([P.TRAIN, P.VAL, P.UNLABELLED, P.LABEL_MAP, *sorted(P.CLASSIFIER.glob("*.safetensors"))])


def _members(cfg, kind, tokenizer, label2id, train, val, device) -> list:
    """distill.teacher ensemble: the models that teach beside the fine-tuned classifier, each fine-tuned
    as finetune trains (its section, early stopping on validation) with the next-best trial's settings."""
    d = cfg.distill
    if d.teacher != "ensemble":
        return []
    best = _io.read_json(P.BEST_PARAMS, "search")
    base = final.settings_for(cfg.finetune, best, P.BEST_PARAMS)
    picks = ensemble.member_picks(pd.read_csv(_io.require(P.SEARCH_TRIALS, "search")), best, d.ensemble_size - 1,
                                  final.SEARCHED)
    plans = [ensemble.member_settings(base, pick, i) for i, pick in enumerate(picks, start=1)]
    print(f"distill: training {len(plans)} more ensemble member(s) with the search's next-best settings: {picks}")

    def train_one(settings, checkpoint_dir):
        return final.train(kind, P.PRETRAINED, label2id, train, val, settings, device, False, None, checkpoint_dir,
                           _inputs(), tokenizer)[0]

    return ensemble.trained_members(plans, train_one, lambda m, out: kind.save(m.cpu(), tokenizer, out),
                                    lambda folder: kind.load_classifier(folder)[0], P.CHECKPOINTS / STAGE, _inputs())


def _train(d, student, teachers, transfer, val, device, tokenizer, keep):
    """(settings, FitResult): finetune's learning rate and optimizer unless distill sets them; resumable."""
    finetune = _io.read_json(P.FINETUNE_REPORT, "finetune")
    settings = to_settings(d, learning_rate=d.learning_rate or finetune["learning_rate"],
                           optimizer=d.optimizer or finetune["optimizer"])
    result = distillation.distill(
        student, teachers, transfer, val, settings, device, d.alpha, d.temperature, tokenizer,
        lambda e: runs.log_metrics(e, step=e["evaluation"]), P.CHECKPOINTS / STAGE / "student",
        f"{_inputs()}-{d.student}-{keep}-{d.student_ffn}-{d.alpha}-{d.temperature}-{d.unlabelled}-{d.teacher}-{len(teachers)}")
    return settings, result


def _data(kind, tokenizer, label2id: dict[str, int], with_unlabelled: bool):
    """(train, transfer set, validation set), cut at the length the teacher was trained with."""
    train, val = (kind.encode(tokenizer, _io.read_split(path), label2id, kind.fixed(tokenizer))
                  for path in (P.TRAIN, P.VAL))
    extra = None
    if with_unlabelled and P.UNLABELLED.exists():
        texts = _io.read_split(P.UNLABELLED)["text"].tolist()
        extra = encode(tokenizer, texts, tokenizer.model_max_length) if texts else None
    return train, distillation.transfer_set(train, extra), val


def _report(kind, teachers, student, val, device, tokenizer, keep, result, settings, n_transfer: int) -> dict:
    """The fine-tuned classifier (register's "teacher") and the student side by side on validation (fp32, as
    they serve) and in batch-scoring speed, and an ensemble teacher's own score."""
    teacher, scores = teachers[0], {}
    for name, model in (("teacher", teacher), ("student", student)):
        preds = kind.predict_logits(model.to(device), val, device, tokenizer).argmax(1)
        scores[f"{name}_val_macro_f1"] = macro_f1(val.labels, preds)
        scores[f"{name}_val_accuracy"] = float(np.mean(preds == val.labels))
        scores[f"{name}_rows_per_s"] = distillation.rows_per_second(model, val, device, tokenizer.pad_token_id)
        scores[f"{name}_parameters"] = modeling.count_parameters(model)
    if len(teachers) > 1:
        logits = [kind.predict_logits(m.to(device), val, device, tokenizer) for m in teachers]
        scores["ensemble_val_macro_f1"] = macro_f1(val.labels, np.mean(logits, axis=0).argmax(1))
        scores["ensemble_member_val_macro_f1"] = [macro_f1(val.labels, x.argmax(1)) for x in logits]
    for model in teachers:
        model.cpu()
    return scores | final.calibrate(kind, student, val, device, tokenizer, False) | {
        "enabled": True, "teacher": "ensemble" if len(teachers) > 1 else "final", "teacher_models": len(teachers),
        "teacher_layers": teacher.config.num_hidden_layers,
        "student_layers": len(keep), "layers_kept": keep, "transfer_rows": n_transfer,
        "teacher_ffn_units": _ffn_units(teacher), "student_ffn_units": _ffn_units(student),
        "val_macro_f1_drop": scores["teacher_val_macro_f1"] - scores["student_val_macro_f1"],
        "speedup": scores["student_rows_per_s"] / scores["teacher_rows_per_s"],
        "best_epoch": result.best_epoch, "epochs_run": result.history[-1]["epoch"] if result.history else 0,
        "resumed_from_epoch": result.resumed_from_epoch, "train_seconds": result.train_seconds,
        "learning_rate": settings.learning_rate, "optimizer": settings.optimizer}


def _ffn_units(model) -> int | None:
    """Feed-forward units per encoder layer, as the config says (BERT-style encoders have them)."""
    return getattr(model.config, "intermediate_size", None)


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
