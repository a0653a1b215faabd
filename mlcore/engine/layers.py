"""Where each weight sits in a BERT-style encoder, and which weights train.

Depth 0 is the embeddings, depth i+1 the i-th encoder layer, and the top depth
(num_layers + 1) everything above the encoder: pooler and task head. Freezing
strategies and layer-wise learning-rate decay are both defined on this depth.
"""
from __future__ import annotations

import re

import torch

_LAYER = re.compile(r"\.(?:layer|layers)\.(\d+)\.")


def num_layers(model: torch.nn.Module) -> int:
    found = [int(m.group(1)) for name, _ in model.named_parameters() if (m := _LAYER.search(name))]
    return max(found) + 1 if found else 0


def depth(name: str, n_layers: int) -> int:
    if ".embeddings." in f".{name}":
        return 0
    m = _LAYER.search(name)
    return int(m.group(1)) + 1 if m else n_layers + 1


def trainable_from(strategy: str, n_layers: int, freeze_layers: int = 0, epoch: int = 1, per_epoch: int = 1) -> int:
    """The lowest depth that trains in `epoch` (1-based): every depth below it is frozen.

    gradual_unfreeze (ULMFiT): epoch 1 trains the head only, and each later epoch
    thaws `per_epoch` more encoder layers from the top, the embeddings last.
    """
    top = n_layers + 1
    if strategy == "full":
        return 0
    if strategy == "freeze_embeddings":
        return 1
    if strategy == "freeze_bottom":
        return min(freeze_layers + 1, top)
    if strategy == "head_only":
        return top
    if strategy == "gradual_unfreeze":
        return max(0, top - (epoch - 1) * per_epoch)
    raise ValueError(f"unknown strategy {strategy!r}")


def set_trainable(model: torch.nn.Module, lowest_depth: int) -> int:
    """Freeze every parameter below `lowest_depth`; returns how many parameters train."""
    n_layers = num_layers(model)
    count = 0
    for name, p in model.named_parameters():
        p.requires_grad_(depth(name, n_layers) >= lowest_depth)
        count += p.numel() if p.requires_grad else 0
    return count


# BatchNorm (the CNNs'); transformers' LayerNorm keeps no running statistics
_BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)


def train_mode(model: torch.nn.Module) -> None:
    """`model.train()`, except that a BatchNorm whose weights are frozen stays in eval mode: a
    frozen layer keeps the running statistics it was pretrained with instead of drifting
    towards the new data's while its scale and shift stay fixed (Keras's fine-tuning rule)."""
    model.train()
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if isinstance(module, _BATCH_NORMS) and params and not any(p.requires_grad for p in params):
            module.eval()


def override_dropout(model: torch.nn.Module, p: float) -> None:
    """Set every dropout rate (BERT's SDPA attention reads its rate from the Dropout module),
    and the config, so that a saved model records the rate it was trained with."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
    config = getattr(model, "config", None)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
        if config is not None and hasattr(config, key):
            setattr(config, key, p)
