"""Quality anchor: TF-IDF (word 1-2 grams) + logistic regression on the pipeline's own split.

Run after the pipeline (it reads data/processed/prepare and reports/metrics.json):

    .venv/bin/python bench/tfidf_baseline.py

Prints one JSON object on its last line: the baseline's and the pipeline's test
accuracy and macro-F1 on the same test split, and their differences.

The model is the pipeline's own baseline (`mlcore.models.baseline`, the one `evaluate` scores
and `register` gates on), but trained here on train + val, as this benchmark always has: it is
the stronger anchor for a pipeline that retrains on train + val. `evaluate`'s
`baseline_accuracy` trains on the rows the classifier trained on (the train split by default),
so the two numbers can differ slightly.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from mlcore.models import baseline

SPLITS = Path("data/processed/prepare")
METRICS = Path("reports/metrics.json")


def main() -> int:
    if not (SPLITS / "train.parquet").exists():
        print("no splits under data/processed/prepare: run the pipeline first (make run)", file=sys.stderr)
        return 2
    train = pd.concat([pd.read_parquet(SPLITS / "train.parquet"), pd.read_parquet(SPLITS / "val.parquet")])
    test = pd.read_parquet(SPLITS / "test.parquet")
    labels = sorted(set(train["label"]) | set(test["label"]))
    ids = {label: i for i, label in enumerate(labels)}
    report = baseline.evaluate(train["text"], train["label"].map(ids), test["text"], test["label"].map(ids), labels)
    majority = test["label"].value_counts(normalize=True).iloc[0]
    result = {
        "test_rows": len(test),
        "majority_class_acc": round(float(majority), 4),
        "tfidf_lr_acc": round(report["accuracy"], 4),
        "tfidf_lr_macro_f1": round(report["macro_f1"], 4),
    }
    if METRICS.exists():
        ours = json.loads(METRICS.read_text())
        result |= {
            "pipeline_acc": round(ours["accuracy"], 4),
            "pipeline_macro_f1": round(ours["macro_f1"], 4),
            "acc_minus_tfidf": round(ours["accuracy"] - result["tfidf_lr_acc"], 4),
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
