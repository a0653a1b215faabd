"""The bag-of-words baseline every classifier is measured against: TF-IDF (word 1-2 grams,
sublinear tf, min_df 2) + logistic regression (C 4, lbfgs, 2000 iterations).

Pure scikit-learn: fit on texts and label ids, predict label ids. The fit is deterministic
(lbfgs does not shuffle; `seed` fixes `random_state` for any solver that would)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from mlcore.errors import UserError
from mlcore.metrics import classification_report


def fit(texts: Sequence[str], y: Sequence[int], seed: int = 0) -> Pipeline:
    """TF-IDF + logistic regression fitted on `texts` with label ids `y`."""
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(C=4.0, max_iter=2000, random_state=seed),
    )
    try:
        return model.fit(list(texts), np.asarray(y))
    except ValueError as err:
        if "no terms remain" not in str(err) and "empty vocabulary" not in str(err):
            raise
        raise UserError("the TF-IDF baseline found no word that occurs in two training texts (min_df=2): "
                        "the training split is too small or its texts share no words. Add training rows "
                        "(prepare.input) or check prepare.text_column.") from None


def predict(model: Pipeline, texts: Sequence[str]) -> np.ndarray:
    """Label ids predicted for `texts`."""
    return model.predict(list(texts))


def evaluate(train_texts: Sequence[str], train_y: Sequence[int], test_texts: Sequence[str],
             test_y: Sequence[int], labels: list[str], seed: int = 0) -> dict:
    """Fit on the training rows, score the test rows: `mlcore.metrics.classification_report`'s shape."""
    model = fit(train_texts, train_y, seed)
    return classification_report(np.asarray(test_y), predict(model, test_texts), labels)


def headline(report: dict) -> dict[str, float]:
    """The two numbers reports/metrics.json carries next to the model's."""
    return {"baseline_accuracy": report["accuracy"], "baseline_macro_f1": report["macro_f1"]}
