"""How a sequence classifier turns token states into logits: the checkpoint's CLS pooler
(the standard HF forward), or the attention-mask-weighted mean of the last hidden states.

`config.classifier_pooling` ("cls" or "mean"; absent: "cls") says which. The weights stay
those of a standard `*ForSequenceClassification` (its dropout and classifier read the
pooled vector); with "mean" the BERT pooler is removed, since nothing reads it.

This is the one implementation, used by training, inference and the MLflow model:
it imports torch only, so the register stage ships this file with the logged model
(MLflow `code_paths`) and `mlcore/tracking/pyfunc_model.py` imports it there.
"""
from __future__ import annotations

import torch

POOLINGS = ("cls", "mean")


def pooling_of(model) -> str:
    pooling = getattr(getattr(model, "config", None), "classifier_pooling", None) or "cls"
    if pooling not in POOLINGS:
        raise ValueError(f"config.classifier_pooling is {pooling!r}; expected one of {POOLINGS}")
    return pooling


def prepare(model):
    """The model, ready for `logits`: with mean pooling its unused BERT pooler is dropped
    (no dead weights in the optimizer, none that DDP would wait for)."""
    if pooling_of(model) == "mean":
        base = model.base_model
        if not (hasattr(model, "classifier") and hasattr(model, "dropout") and hasattr(base, "pooler")):
            raise ValueError(f"classifier_pooling 'mean' needs a BERT-style classifier (dropout + classifier on "
                             f"the pooled vector); {type(model).__name__} is not one")
        base.pooler = None
    return model


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of the token states that the attention mask keeps (padding left out); no
    mask: the batch has no padding."""
    if attention_mask is None:
        return hidden.mean(1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
           encoder_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The classifier's logits under its configured pooling. `encoder_mask`: the attention
    mask already in the encoder's 4-D shape, built on the host so that the encoder never asks
    the GPU about padding (mlcore/engine/transfer.py); `attention_mask` None: no padding."""
    encoder_input = attention_mask if encoder_mask is None else encoder_mask
    if pooling_of(model) == "cls":
        return model(input_ids=input_ids, attention_mask=encoder_input).logits
    hidden = model.base_model(input_ids=input_ids, attention_mask=encoder_input).last_hidden_state
    return model.classifier(model.dropout(mean_pool(hidden, attention_mask)))
