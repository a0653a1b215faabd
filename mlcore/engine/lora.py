"""LoRA (strategy `lora`): low-rank adapters trained beside frozen encoder weights, through peft.

The adapters are injected into the model in place (`peft.inject_adapter_in_model`), so the
model keeps its class, its pooling (mlcore/models/classifier_pooling.py) and its parameter
names apart from the added `lora_A` / `lora_B` ones; a checkpoint taken mid-run resumes into
a model injected the same way. Only the adapters and the task head train. When training
ends they are merged into the weights they adapt and removed, so what is saved, registered
and served is a plain model of the original architecture, as fast as a fully fine-tuned one.
LoRA's value here is small trainable state (one adapter per consumer), not speed: peft's
maintainers note that it does not make a small encoder train faster.
"""
from __future__ import annotations

import torch

from mlcore.engine import layers
from mlcore.errors import UserError


def add_adapters(model: torch.nn.Module, rank: int, alpha: float, dropout: float, targets: list[str]) -> None:
    from peft import LoraConfig, inject_adapter_in_model  # imported only when a run asks for LoRA

    present = {name.rpartition(".")[2] for name, _ in model.named_modules()}
    if not set(targets) & present:
        raise UserError(
            f"strategy lora: none of lora_targets {targets} names a layer of {type(model).__name__}; LoRA adapts "
            f"a transformer encoder's linear layers (for BERT-style ones: query, key, value, dense). Set "
            f"lora_targets to some of its layer names, or use another strategy")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    inject_adapter_in_model(config, model)


def set_trainable(model: torch.nn.Module) -> int:
    """Adapters and the task head train, everything else is frozen; returns how many
    parameters train."""
    top = layers.num_layers(model) + 1
    count = 0
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name or layers.depth(name, top - 1) == top)
        count += p.numel() if p.requires_grad else 0
    return count


@torch.no_grad()
def merge_adapters(model: torch.nn.Module) -> int:
    """Fold every adapter into the weight it adapts and put the plain layer back; returns how
    many layers were merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
            merged += 1
    return merged
