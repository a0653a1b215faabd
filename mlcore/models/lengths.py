"""A stage's max_length for a checkpoint: "auto" chosen over the stage's training texts
(mlcore.engine.batching.resolve_max_length), capped by what the checkpoint takes, or fixed."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformers import AutoConfig

from mlcore.engine.batching import LengthChoice, choose_max_length


def choose_for(setting: int | str, checkpoint: str | Path, tokenizer, texts: Sequence[str]) -> LengthChoice:
    """max_length and the share of `texts` it truncates; the cap is the smaller of the
    tokenizer's model_max_length and the checkpoint's max_position_embeddings."""
    config = AutoConfig.from_pretrained(checkpoint, trust_remote_code=False)
    return choose_max_length(setting, tokenizer, list(texts), config)
