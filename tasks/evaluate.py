"""evaluate: score the classifier on the held-out test split, next to the simple baseline (text: TF-IDF +
logistic regression; images: logistic regression on the pixels) trained on the rows the classifier
trained on (train, or train + val). When the distill stage trained a student, it is scored on the
same rows too (metrics.json's `student`), for register.candidate to register either."""
from __future__ import annotations

import json
import sys

import pandas as pd

from mlcore import modality
from mlcore.metrics import classification_report
from mlcore.models import baseline, calibration
from mlcore.plots import confusion_matrix_png
from mlcore.tracking import runs
from tasks import _io
from tasks import _paths as P
from tasks._context import StageContext
from tasks._runner import as_task, cli

STAGE = "evaluate"


def run(ctx: StageContext) -> dict:
    cfg, parent_run_id = ctx.cfg, ctx.parent_run_id
    device = ctx.device
    label2id = _io.label_map()
    labels = sorted(label2id, key=label2id.get)
    kind = modality.of_splits(P.TEST)
    model, processor = kind.load_classifier(_io.require(P.CLASSIFIER, "finetune"), key="models/classifier")
    test_df = _io.read_split(P.TEST)
    test = kind.encode(processor, test_df, label2id, kind.fixed(processor))
    with runs.stage_run(cfg, STAGE, parent_run_id):
        runs.log_datasets({"test": test_df}, P.SPLITS)
        logits = kind.predict_logits(model.to(device), test, device, processor, cfg.evaluate.batch_size)
        preds = logits.argmax(1)
        report = classification_report(test.labels, preds, labels) | calibration.report(
            logits, test.labels, calibration.stored(P.CLASSIFIER))
        confusion = report.pop("confusion_matrix")
        train_df = _training_rows()
        report |= baseline.headline(kind.baseline(train_df, train_df["label"].map(label2id), test_df, test.labels,
                                                  labels))
        if _has_student():
            report["student"] = _score_student(kind, test, device, labels, cfg.evaluate.batch_size)
            runs.log_metrics({f"test_student_{k}": v for k, v in report["student"].items() if isinstance(v, float)})
        _io.write_json(P.METRICS, report)
        _io.write_json(P.CONFUSION_JSON, confusion)
        confusion_matrix_png(confusion["matrix"], labels, P.CONFUSION_PNG)
        predictions = {kind.row_column: test_df[kind.row_column], "actual": test_df["label"],
                       "predicted": [labels[i] for i in preds]}
        _io.write_csv(P.PREDICTIONS, pd.DataFrame(predictions))
        runs.log_metrics({f"test_{k}": v for k, v in report.items()})
        for label, scores in report["per_class"].items():
            runs.log_metrics({f"test_{label}_{k}": v for k, v in scores.items()})
        for path in (P.METRICS, P.CONFUSION_JSON, P.CONFUSION_PNG):
            runs.log_artifact(path)
    return {k: round(report[k], 4) for k in ("accuracy", "macro_f1", "baseline_accuracy", "baseline_macro_f1", "ece")}


def _has_student() -> bool:
    return (P.STUDENT / "config.json").exists()


def _score_student(kind, test, device, labels: list[str], batch_size: int) -> dict:
    """The distilled student's test report, its confusion matrix kept for register's card."""
    model, processor = kind.load_classifier(P.STUDENT, key="models/student")
    logits = kind.predict_logits(model.to(device), test, device, processor, batch_size)
    return classification_report(test.labels, logits.argmax(1), labels) | calibration.report(
        logits, test.labels, calibration.stored(P.STUDENT))


def _training_rows() -> pd.DataFrame:
    """The rows the classifier trained on, as finetune recorded them (train, or train + val)."""
    info = P.CLASSIFIER / "pipeline_info.json"
    trained_on = json.loads(info.read_text()).get("trained_on", "train") if info.exists() else "train"
    splits = (P.TRAIN, P.VAL) if trained_on == "train+val" else (P.TRAIN,)
    return pd.concat([_io.read_split(path) for path in splits], ignore_index=True)


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
