"""MLflow "model from code" for the text classifier.

MLflow copies this file into the logged model and runs it at load time, so no
pickle is ever written or read. It imports only torch, transformers and pandas, and
`classifier_pooling` (torch only), which registry.py ships beside it (`code_paths`):
consumers need nothing of this project. The classifier's pooling (cls or mean, in its
config.json) is applied by that module, the same code that trained and evaluated it.

    model = mlflow.pyfunc.load_model("models:/<name>@champion")
    model.predict(pd.DataFrame({"text": ["a gripping, funny film"]}))  # -> labels
    model.predict(df, params={"return_scores": True})  # -> label + per-class scores
"""
from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

try:  # in a logged model: the copy MLflow ships with it (code_paths), on sys.path at load time
    import classifier_pooling
except ImportError:  # in the project, where MLflow runs this file once while logging it
    from mlcore.models import classifier_pooling


class TextClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        path = context.artifacts["model_dir"]
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # a mean-pooled model has no pooler weights: expected
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                path, use_safetensors=True, trust_remote_code=False)
        finally:
            transformers.logging.set_verbosity(verbosity)
        self.model = classifier_pooling.prepare(model).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    def _texts(self, model_input) -> list[str]:
        if isinstance(model_input, pd.DataFrame):
            column = "text" if "text" in model_input.columns else model_input.columns[0]
            return model_input[column].astype(str).tolist()
        if isinstance(model_input, (pd.Series, np.ndarray, list, tuple)):
            return [str(t) for t in model_input]
        return [str(model_input)]

    @torch.inference_mode()
    def predict(self, context, model_input, params=None):
        texts = self._texts(model_input)
        probs = []
        for start in range(0, len(texts), 64):
            enc = self.tokenizer(texts[start : start + 64], truncation=True, padding=True, return_tensors="pt",
                                 max_length=min(self.tokenizer.model_max_length, 512))
            logits = classifier_pooling.logits(self.model, enc["input_ids"], enc["attention_mask"])
            probs.append(torch.softmax(logits.float(), dim=-1).numpy())
        probs = np.concatenate(probs) if probs else np.zeros((0, len(self.labels)))
        labels = [self.labels[i] for i in probs.argmax(1)] if len(texts) else []
        if (params or {}).get("return_scores"):
            out = pd.DataFrame({"label": labels})
            for i, name in enumerate(self.labels):
                out[f"score_{name}"] = probs[:, i]
            return out
        return pd.Series(labels, name="label")


mlflow.models.set_model(TextClassifier())
