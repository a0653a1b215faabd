"""TrainSettings: everything the training engine needs to know, as one frozen value.

The training knobs are exactly the `TrainingKnobs` keys of params.yaml and have no
defaults here: those live once, in the config models. Build settings with
`mlcore.config.to_settings(section, **values)` (the engine itself imports no config).
The engine-only fields come first: what each stage sets itself.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

_IDENTITY_IF_SET = {"augment": "auto", "augment_flip": True, "augment_text_ops": ["mask"], "lora_rank": 8,
                    "lora_alpha": 16.0, "lora_dropout": 0.1, "lora_targets": ["query", "value"]}


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    # Engine-only: the stage's own keys or values it passes.
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str = "adamw"
    patience: int | None = None  # None: no early stopping
    min_delta: float = 0.0
    seed: int = 42
    eval_batch_size: int = 256
    # The training knobs (mlcore.config.TrainingKnobs: defaults and help there).
    weight_decay: float
    momentum: float
    schedule: str
    warmup: float
    lr_gamma: float
    lr_step_epochs: float
    strategy: str
    freeze_layers: int
    unfreeze_per_epoch: int
    layerwise_lr_decay: float
    dropout: float | None
    label_smoothing: float
    class_weights: str
    max_grad_norm: float | None
    grad_accumulation: int
    length_grouping: bool
    precision: str
    compile: bool
    num_workers: int
    resume: bool
    augment: float | str  # "auto": the measured default (mlcore.modality.image, mlcore.models.classifier)
    augment_flip: bool
    augment_text_ops: list[str]
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    lora_targets: list[str]
    eval_every_steps: int | None  # None: evaluate at each epoch's end only

    def fingerprint(self) -> str:
        """Identity of a run for resuming: settings that do not change the result are left out."""
        skip = {"resume", "num_workers", "eval_batch_size"}
        data = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        # The augmentation and LoRA keys join the identity only when set, so that every text
        # checkpoint saved before they existed still resumes.
        for key, unset in _IDENTITY_IF_SET.items():
            if data[key] == unset:
                del data[key]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
