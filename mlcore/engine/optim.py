"""Optimizers by name, with decay-free biases/LayerNorms and layer-wise learning rates."""
from __future__ import annotations

import torch

from mlcore.engine import layers

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")

# torch has fused kernels (one kernel for all parameters) for these on CPU and CUDA;
# the others get the multi-tensor "foreach" path.
_FUSED = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.Adagrad)


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float, layerwise_lr_decay: float = 1.0) -> list[dict]:
    """One group per (depth, decay or not). Biases and norm weights get no weight decay (the
    BERT recipe): those named so, and every other 1-D parameter, such as the BatchNorm scales
    inside EfficientNet's blocks (`_bn0`, `_bn1`, `_bn2`); in a BERT encoder the two rules pick
    the same parameters. With layer-wise decay d, depth k below the top gets lr * d**k."""
    n_layers = layers.num_layers(model)
    top = n_layers + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        level = layers.depth(name, n_layers) if layerwise_lr_decay != 1.0 else top
        decays = p.ndim > 1 and not name.endswith(NO_DECAY)
        group = groups.setdefault((level, decays), {
            "params": [], "weight_decay": weight_decay if decays else 0.0,
            "lr": lr * layerwise_lr_decay ** (top - level), "depth": level,
        })
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def make_optimizer(
    name: str, model: torch.nn.Module, lr: float, weight_decay: float = 0.0, *,
    momentum: float = 0.9, layerwise_lr_decay: float = 1.0, fused: bool | None = None,
) -> torch.optim.Optimizer:
    """`fused=None` picks the fused kernel where torch has one for this optimizer."""
    groups = param_groups(model, lr, weight_decay, layerwise_lr_decay)
    if not groups:
        raise ValueError("no trainable parameters: the freezing strategy froze the whole model")
    kinds = {
        "sgd": (torch.optim.SGD, {}),
        "sgd_momentum": (torch.optim.SGD, {"momentum": momentum}),
        "sgd_nesterov": (torch.optim.SGD, {"momentum": momentum, "nesterov": True}),
        "adagrad": (torch.optim.Adagrad, {}),
        "rmsprop": (torch.optim.RMSprop, {}),
        "adam": (torch.optim.Adam, {}),
        "adamw": (torch.optim.AdamW, {}),
    }
    if name not in kinds:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(kinds)}")
    cls, kwargs = kinds[name]
    use_fused = cls in _FUSED if fused is None else fused and cls in _FUSED
    impl = {"fused": True} if use_fused else {"foreach": True}
    return cls(groups, lr=lr, **kwargs, **impl)
