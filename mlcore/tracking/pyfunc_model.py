"""MLflow "model from code" for the text classifier.

MLflow copies this file into the logged model and runs it at load time, so no
pickle is ever written or read. It imports only torch, transformers and pandas, and
`classifier_pooling` (torch only), which registry.py ships beside it (`code_paths`):
consumers need nothing of this project. The classifier's pooling (cls or mean, in its
config.json) is applied by that module, the same code that trained and evaluated it.

    model = mlflow.pyfunc.load_model("models:/<name>@champion")
    model.predict(pd.DataFrame({"text": ["a gripping, funny film"]}))  # -> labels
    model.predict(df, params={"return_scores": True})  # -> label + per-class scores

Speed: texts are tokenized once, sorted by token count and scored in batches of
BATCH_SIZE, so a batch pads only to its own longest text; results come back in the
input order. Scores are softmax(logits / T), T the fitted temperature the fine-tune
stage stores in config.json (`temperature`; absent or null: 1); labels are the argmax
of the logits, which T > 0 does not change.

Format: the one register chose (register.serve_format), in the `serving` artifact's
serving.json: torch (fp32, the scores `evaluate` reported), torch-bf16 (bf16 autocast), onnx
or onnx-int8 (ONNX Runtime on the graph beside it, the same pooling and head). Register
adopted it only when its labels agreed with torch fp32 on at least 99.5% of the test rows.
When onnxruntime cannot be imported or the graph fails to load, the model serves torch fp32
and logs why (`served_format` and `fallback_reason` say so on the loaded model); the torch
weights always ship. serving_runtime, shipped beside this file, reads the format:
CLASSIFIER_SERVE_FORMAT=torch (or torch-bf16) set before loading serves torch instead.
TEXT_CLASSIFIER_AUTOCAST=bf16 still opts a torch model into bf16 autocast: faster on a CPU
with native bf16 (avx512_bf16 / amx) or a GPU, slower elsewhere.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

try:  # in a logged model: the copies MLflow ships with it (code_paths), on sys.path at load time
    import classifier_pooling
    import serving_runtime
except ImportError:  # in the project, where MLflow runs this file once while logging it
    from mlcore.models import classifier_pooling, serving_runtime

# Rows per forward pass. Length-sorted, a larger batch adds little padding, and on a CPU
# the matmuls are already efficient at 64 rows x tens of tokens.
BATCH_SIZE = 64
# Texts tokenized and sorted together: bounds the token lists held at once for a very
# large input, while leaving about as little padding as sorting everything.
WINDOW = 8192
MAX_LENGTH = 512
AUTOCAST_ENV = "TEXT_CLASSIFIER_AUTOCAST"
# Not set here: torch.set_num_threads. torch already uses every core by default, and a
# model changing a process-wide setting would surprise its host (a server, a Spark worker).


def temperature_of(model_dir: str, config) -> float:
    """The fitted temperature (absent or null: 1), checked once at load. Read from config.json
    itself: transformers 5 counts `temperature` as a generation parameter, so it drops the key
    when it loads a config (and refuses to save_pretrained a config that sets it)."""
    raw = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("temperature")
    value = float(raw if raw is not None else getattr(config, "temperature", 1.0) or 1.0)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"config.json temperature is {value!r}; it must be a positive number")
    return value


def autocast_dtype() -> torch.dtype | None:
    choice = os.environ.get(AUTOCAST_ENV, "").strip().lower()
    if choice in ("", "fp32", "none", "0"):
        return None
    if choice == "bf16":
        return torch.bfloat16
    raise ValueError(f"${AUTOCAST_ENV} is {choice!r}; use bf16, or leave it unset for fp32")


def pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask for token lists, padded to the longest of them
    (on the tokenizer's padding side, as `tokenizer(..., padding=True)` would)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


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
        self.temperature = temperature_of(path, self.model.config)
        self.load_format(context.artifacts.get("serving"))

    def load_format(self, serving_dir: str | None) -> None:
        """Set up the chosen format; an ONNX one that cannot run falls back to torch fp32, logged."""
        self.served_format, self.session, self.fallback_reason = serving_runtime.load(serving_dir)
        self.autocast = torch.bfloat16 if self.served_format == "torch-bf16" else autocast_dtype()

    def _texts(self, model_input) -> list[str]:
        if isinstance(model_input, pd.DataFrame):
            column = "text" if "text" in model_input.columns else model_input.columns[0]
            return model_input[column].astype(str).tolist()
        if isinstance(model_input, (pd.Series, np.ndarray, list, tuple)):
            return [str(t) for t in model_input]
        return [str(model_input)]

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
            return torch.from_numpy(self.session.run(["logits"], feed)[0])
        cast = torch.autocast(ids.device.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        with cast:
            return classifier_pooling.logits(self.model, ids, mask).float()

    @torch.inference_mode()
    def logits(self, texts: list[str]) -> torch.Tensor:
        """fp32 logits (rows in the order of `texts`), scored in length-sorted batches."""
        out = torch.zeros((len(texts), len(self.labels)), dtype=torch.float32)
        max_length = min(self.tokenizer.model_max_length, MAX_LENGTH)
        pad_id = self.tokenizer.pad_token_id or 0
        left = self.tokenizer.padding_side == "left"
        for first in range(0, len(texts), WINDOW):
            window = texts[first : first + WINDOW]
            ids = self.tokenizer(window, truncation=True, max_length=max_length)["input_ids"]
            # Longest first: a batch too large for memory fails at once, not at the end.
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
            for start in range(0, len(order), BATCH_SIZE):
                rows = order[start : start + BATCH_SIZE]
                batch_ids, mask = pad([ids[i] for i in rows], pad_id, left)
                out[torch.tensor(rows) + first] = self._forward(batch_ids, mask)
        return out

    def predict(self, context, model_input, params=None):
        texts = self._texts(model_input)
        logits = self.logits(texts)
        labels = [self.labels[i] for i in logits.argmax(1).tolist()]
        if (params or {}).get("return_scores"):
            probs = torch.softmax(logits / self.temperature, dim=-1).numpy()
            out = pd.DataFrame({"label": labels})
            for i, name in enumerate(self.labels):
                out[f"score_{name}"] = probs[:, i]
            return out
        return pd.Series(labels, name="label")


mlflow.models.set_model(TextClassifier())
