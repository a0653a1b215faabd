"""Text: a tokenizer and length-bucketed batches, a BERT-style encoder with a pooled head, and
the TF-IDF + logistic regression baseline."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mlcore.engine.batching import Encoded, LengthChoice
from mlcore.engine.loop import FitResult
from mlcore.engine.settings import TrainSettings
from mlcore.models import baseline, classifier, lengths, modeling


class Text:
    name = "text"
    row_column = "text"  # what identifies a row to a person (predictions, the card)

    def processor(self, checkpoint: Path):
        return classifier.load_tokenizer(checkpoint)

    def choose(self, setting: int | str, checkpoint: Path, processor, train_df: pd.DataFrame) -> LengthChoice:
        """The tokens kept per text, chosen over all of `train_df` (max_length)."""
        return lengths.choose_for(setting, checkpoint, processor, train_df["text"])

    def fixed(self, processor) -> LengthChoice | None:
        """The shape a saved classifier was trained with (None: its own limit)."""
        return None

    def precision(self, setting: str, checkpoint: Path, device: torch.device) -> str:
        return setting

    def adjusted(self, settings: TrainSettings, checkpoint: Path, device: torch.device) -> TrainSettings:
        """The settings training will use (text: as given)."""
        return settings

    def encode(self, processor, df: pd.DataFrame, label2id: dict[str, int], shape: LengthChoice | None) -> Encoded:
        max_length = shape.max_length if shape is not None else processor.model_max_length
        return classifier.encode_split(processor, df, label2id, max_length)

    def joined(self, a: Encoded, b: Encoded) -> Encoded:
        return classifier.joined(a, b)

    def finetune(self, checkpoint: Path, label2id: dict[str, int], train: Encoded, val: Encoded,
                 settings: TrainSettings, device: torch.device, on_epoch: Callable[[dict], None] | None = None,
                 checkpoint_dir: Path | None = None, fingerprint: str = "", keep_best: bool = True,
                 processor=None) -> tuple[torch.nn.Module, FitResult]:
        return classifier.finetune(checkpoint, label2id, train, val, settings, device, on_epoch, checkpoint_dir,
                                   fingerprint, keep_best, tokenizer=processor)

    def predict_logits(self, model, data: Encoded, device: torch.device, processor, batch_size: int = 256,
                       precision_name: str = "fp32") -> np.ndarray:
        return classifier.predict_logits(model, data, device, batch_size, processor.pad_token_id, precision_name)

    def load_classifier(self, path: Path, key: str = "model"):
        """(model, processor) of a saved classifier."""
        return modeling.load_classifier(path, key=key)

    def save(self, model, processor, out: Path, extra: dict | None = None, shape: LengthChoice | None = None) -> Path:
        if shape is not None:
            processor.model_max_length = shape.max_length  # consumers truncate as training did
        return modeling.save(model.cpu(), processor, out, extra=extra)

    def model_inputs(self, df: pd.DataFrame) -> list[str]:
        """What the registered model is given for these rows (the champion gate scores it)."""
        return df["text"].tolist()

    def card_facts(self, classifier_dir: Path) -> dict:
        """What the model card states about the model's input."""
        config = json.loads((classifier_dir / "config.json").read_text())
        return {"modality": "text", "pooling": config.get("classifier_pooling", "cls")}

    def baseline(self, train_df: pd.DataFrame, train_y, test_df: pd.DataFrame, test_y, labels: list[str]) -> dict:
        return baseline.evaluate(train_df["text"], train_y, test_df["text"], test_y, labels)


TEXT = Text()
