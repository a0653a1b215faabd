"""TrainSettings: everything the training engine needs to know, as one frozen value.

Field names match the `TrainingKnobs` keys of params.yaml, so a config section
converts with `TrainSettings.from_section(cfg.finetune, learning_rate=..., ...)`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    momentum: float = 0.9
    schedule: str = "linear"
    warmup: float = 0.1
    lr_gamma: float = 0.5
    lr_step_epochs: float = 1.0
    strategy: str = "full"
    freeze_layers: int = 0
    unfreeze_per_epoch: int = 1
    layerwise_lr_decay: float = 1.0
    dropout: float | None = None
    label_smoothing: float = 0.0
    class_weights: str = "none"
    max_grad_norm: float | None = 1.0
    grad_accumulation: int = 1
    length_grouping: bool = True
    precision: str = "auto"
    compile: bool = False
    num_workers: int = 0
    resume: bool = True
    eval_every_steps: int | None = None  # None: evaluate at each epoch's end only
    patience: int | None = None  # None: no early stopping
    min_delta: float = 0.0
    seed: int = 42
    eval_batch_size: int = 256

    @classmethod
    def from_section(cls, section, **overrides) -> "TrainSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in section.model_dump().items() if k in names}
        return cls(**(values | overrides))

    def fingerprint(self) -> str:
        """Identity of a run for resuming: settings that do not change the result are left out."""
        skip = {"resume", "num_workers", "eval_batch_size"}
        data = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
