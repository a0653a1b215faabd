"""The seam between the two modalities: text and images share the stages, the engine, the
search, the gate and the card; what differs sits behind one object per modality.

A modality turns a split's DataFrame into what its trainer eats (`choose`, `encode`), trains
and scores a classifier on it (`finetune`, `predict_logits`), loads and saves the classifier
(`load_classifier`, `save`) and fits the simple baseline the gate compares against
(`baseline`). `processor` is what the model needs beside its weights: the tokenizer for text.
Which modality a run has is decided once, by prepare, from the data (prepare.modality); later
stages read it back from the splits' columns (`of_splits`)."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

IMAGE_COLUMN = "pixels"  # the split column that marks image data (mlcore.data.images)


def named(name: str):
    """The modality object for "text" or "image"."""
    if name == "image":
        from mlcore.modality.image import IMAGE
        return IMAGE
    if name == "text":
        from mlcore.modality.text import TEXT
        return TEXT
    raise ValueError(f"unknown modality {name!r}")


def name_of_splits(split: Path) -> str:
    """"image" when prepare wrote images into `split` (a parquet file), else "text". Reads the schema only."""
    return "image" if IMAGE_COLUMN in pq.read_schema(split).names else "text"


def of_splits(split: Path):
    return named(name_of_splits(split))
