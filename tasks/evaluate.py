"""evaluate: score the classifier on the held-out test split."""
from __future__ import annotations

import sys

import pandas as pd

from mlcore.config import Config
from mlcore.engine.device import configure_threads, resolve_device
from mlcore.metrics import classification_report
from mlcore.models import modeling
from mlcore.models.classifier import encode_split, predict_logits
from mlcore.plots import confusion_matrix_png
from mlcore.tracking import runs
from tasks import _io
from tasks import _paths as P
from tasks._runner import as_task, cli

STAGE = "evaluate"


def run(cfg: Config, parent_run_id: str | None = None) -> dict:
    configure_threads(cfg.runtime.num_threads)
    device = resolve_device(cfg.device())
    label2id = _io.label_map()
    labels = sorted(label2id, key=label2id.get)
    model, tokenizer = modeling.load_classifier(_io.require(P.CLASSIFIER, "finetune"), key="models/classifier")
    test_df = _io.read_split(P.TEST)
    test = encode_split(tokenizer, test_df, label2id, tokenizer.model_max_length)
    with runs.stage_run(cfg, STAGE, parent_run_id):
        logits = predict_logits(model.to(device), test, device, cfg.evaluate.batch_size, tokenizer.pad_token_id)
        preds = logits.argmax(1)
        report = classification_report(test.labels, preds, labels)
        confusion = report.pop("confusion_matrix")
        _io.write_json(P.METRICS, report)
        _io.write_json(P.CONFUSION_JSON, confusion)
        confusion_matrix_png(confusion["matrix"], labels, P.CONFUSION_PNG)
        predictions = {"text": test_df["text"], "actual": test_df["label"], "predicted": [labels[i] for i in preds]}
        pd.DataFrame(predictions).to_csv(P.PREDICTIONS, index=False)
        runs.log_metrics({f"test_{k}": v for k, v in report.items()})
        for label, scores in report["per_class"].items():
            runs.log_metrics({f"test_{label}_{k}": v for k, v in scores.items()})
        for path in (P.METRICS, P.CONFUSION_JSON, P.CONFUSION_PNG):
            runs.log_artifact(path)
    return {"accuracy": round(report["accuracy"], 4), "macro_f1": round(report["macro_f1"], 4)}


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
