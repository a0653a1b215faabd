"""Fine-tuning a classifier from a pretrained checkpoint: shared by the search trials and finetune."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer

from mlcore import modeling
from mlcore.batching import Encoded, encode
from mlcore.training import TrainResult, TrainSettings, train_classifier


def load_tokenizer(checkpoint: str | Path):
    return AutoTokenizer.from_pretrained(modeling.check_checkpoint(checkpoint, "model"), trust_remote_code=False)


def encode_split(tokenizer, df: pd.DataFrame, label2id: dict[str, int], max_length: int) -> Encoded:
    unknown = set(df["label"]) - set(label2id)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not in the label map")
    return encode(tokenizer, df["text"].tolist(), max_length, df["label"].map(label2id).tolist())


def joined(a: Encoded, b: Encoded) -> Encoded:
    """Two encoded splits as one training set (retraining on train + validation)."""
    return Encoded(a.input_ids + b.input_ids, np.concatenate([a.labels, b.labels]))


def finetune(
    checkpoint: str | Path,
    label2id: dict[str, int],
    train: Encoded,
    val: Encoded,
    settings: TrainSettings,
    device: torch.device,
    on_epoch: Callable[[dict], None] | None = None,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
    keep_best: bool = True,
):
    """A fresh classifier head on `checkpoint`, trained; returns (model at its best epoch,
    or its last with `keep_best=False`, and the result)."""
    torch.manual_seed(settings.seed)  # the head's initialisation is part of the seeded run
    model, tokenizer = modeling.load_classifier(checkpoint, label2id)
    result: TrainResult = train_classifier(model, train, val, settings, device, tokenizer.pad_token_id,
                                           on_epoch, checkpoint_dir, fingerprint, keep_best)
    return model, result
