"""The search space: what one trial samples (learning rate, optimizer, the optional dimensions)."""
from __future__ import annotations

import optuna

from mlcore.config import SearchConfig

SGD_FAMILY = ("sgd", "sgd_momentum", "sgd_nesterov")
MOMENTUM_OPTIMIZERS = ("sgd_momentum", "sgd_nesterov")


def lr_range(cfg: SearchConfig, optimizer: str) -> tuple[float, float]:
    """SGD's useful learning rates sit ~10-100x above Adam's; one shared range would
    spend half the trials on SGD steps too small to move the weights."""
    scale = cfg.sgd_lr_scale if optimizer in SGD_FAMILY else 1.0
    return cfg.lr_min * scale, cfg.lr_max * scale


def suggest(trial: optuna.Trial, cfg: SearchConfig) -> dict:
    """One trial's settings: TrainSettings overrides (learning_rate, optimizer, and each
    dimension of `search.space` that is not null)."""
    if cfg.sampler == "grid":
        return {"optimizer": trial.suggest_categorical("optimizer", list(cfg.grid["optimizer"])),
                "learning_rate": trial.suggest_categorical("learning_rate", list(cfg.grid["learning_rate"]))}
    optimizer = trial.suggest_categorical("optimizer", list(cfg.optimizers))
    low, high = lr_range(cfg, optimizer)
    params = {"learning_rate": trial.suggest_float("learning_rate", low, high, log=True), "optimizer": optimizer}
    space = cfg.space
    if space.weight_decay:
        params["weight_decay"] = trial.suggest_float("weight_decay", *space.weight_decay, log=True)
    if space.warmup:
        params["warmup"] = trial.suggest_float("warmup", *space.warmup)
    if space.layerwise_lr_decay:
        params["layerwise_lr_decay"] = trial.suggest_float("layerwise_lr_decay", *space.layerwise_lr_decay)
    if space.freeze_layers:
        frozen = trial.suggest_int("freeze_layers", *space.freeze_layers)
        params |= ({"strategy": "freeze_bottom", "freeze_layers": frozen} if frozen
                   else {"strategy": "full", "freeze_layers": 0})
    if space.lora_rank:
        params |= {"strategy": "lora", "lora_rank": trial.suggest_categorical("lora_rank", list(space.lora_rank))}
    if space.batch_size:
        params["batch_size"] = trial.suggest_categorical("batch_size", list(space.batch_size))
    if space.schedule:
        params["schedule"] = trial.suggest_categorical("schedule", list(space.schedule))
    if space.momentum and optimizer in MOMENTUM_OPTIMIZERS:  # conditional: absent from other trials
        params["momentum"] = trial.suggest_float("momentum", *space.momentum)
    if space.augment:
        params["augment"] = trial.suggest_float("augment", *space.augment)
    return params
