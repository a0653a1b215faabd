"""Quality anchor: TF-IDF (word 1-2 grams) + logistic regression on the pipeline's own split.

Run after the pipeline (it reads data/processed/prepare and reports/metrics.json):

    .venv/bin/python bench/tfidf_baseline.py

Prints one JSON object on its last line: the baseline's and the pipeline's test
accuracy and macro-F1 on the same test split, and their differences.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

SPLITS = Path("data/processed/prepare")
METRICS = Path("reports/metrics.json")


def main() -> int:
    if not (SPLITS / "train.parquet").exists():
        print("no splits under data/processed/prepare: run the pipeline first (make run)", file=sys.stderr)
        return 2
    train = pd.concat([pd.read_parquet(SPLITS / "train.parquet"), pd.read_parquet(SPLITS / "val.parquet")])
    test = pd.read_parquet(SPLITS / "test.parquet")
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    clf = LogisticRegression(max_iter=2000, C=4.0)
    clf.fit(vec.fit_transform(train["text"]), train["label"])
    pred = clf.predict(vec.transform(test["text"]))
    majority = test["label"].value_counts(normalize=True).iloc[0]
    result = {
        "test_rows": len(test),
        "majority_class_acc": round(float(majority), 4),
        "tfidf_lr_acc": round(float(accuracy_score(test["label"], pred)), 4),
        "tfidf_lr_macro_f1": round(float(f1_score(test["label"], pred, average="macro")), 4),
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
