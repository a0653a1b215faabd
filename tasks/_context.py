"""What a stage process derives once and hands to the stage's `run()`.

The config is loaded and validated once (by the command line, or by the flow for all its
stages), then each stage process resolves here, once, what depends on the machine: the
device, the config with `runtime.profile` applied for that device, and the CPU threads.
The stage command (`python -m tasks.<stage>`, under `dvc repro`) and the stage's Prefect
task build the same context, so both drivers run a stage with the same values.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mlcore.config import Config, profiles
from mlcore.engine import device as devices


@dataclass(frozen=True)
class StageContext:
    cfg: Config  # validated, with runtime.profile applied for `device`
    device: torch.device  # runtime.device (or PIPELINE_DEVICE): CUDA when present, else the CPU
    parent_run_id: str | None = None  # the pipeline's MLflow run, when the flow runs the stage


def stage_context(cfg: Config, parent_run_id: str | None = None) -> StageContext:
    """The context for a stage of `cfg`; prints what runtime.profile raised, if anything."""
    device = devices.resolve_device(cfg.device())
    resolved = profiles.effective(cfg, device.type)
    if resolved.changes:
        print(f"runtime.profile {resolved.describe()}")
    devices.configure_threads(resolved.config.runtime.num_threads)
    return StageContext(resolved.config, device, parent_run_id)
