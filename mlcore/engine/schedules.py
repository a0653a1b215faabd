"""Learning-rate schedules: a warmup, then constant, linear, cosine, exponential or step decay.

`lr_factor` is the whole definition (a pure function of the step), so tests can
check the schedule against its formula and a resumed run lands on the same value.
"""
from __future__ import annotations

import math

import torch


def warmup_steps(warmup: float, total_steps: int) -> int:
    """Below 1, `warmup` is a fraction of all steps; from 1 up, a number of steps."""
    steps = int(total_steps * warmup) if warmup < 1 else int(warmup)
    return min(steps, max(total_steps - 1, 0))


def lr_factor(
    step: int, *, schedule: str, total_steps: int, warmup: int, steps_per_epoch: int,
    gamma: float = 0.5, step_epochs: float = 1.0,
) -> float:
    """The multiplier of the base learning rate at optimizer step `step` (0-based).

    Warmup rises linearly to 1 over `warmup` steps; after it, with t = step - warmup
    and progress p = t / (total_steps - warmup):
      constant 1 | linear 1 - p | cosine (1 + cos(pi p)) / 2
      exponential gamma ** (t / steps_per_epoch) | step gamma ** floor(t / (step_epochs * steps_per_epoch))
    """
    if step < warmup:
        return (step + 1) / warmup
    t = step - warmup
    progress = min(1.0, t / max(1, total_steps - warmup))
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "exponential":
        return gamma ** (t / max(1, steps_per_epoch))
    if schedule == "step":
        return gamma ** math.floor(t / max(1, round(step_epochs * steps_per_epoch)))
    raise ValueError(f"unknown schedule {schedule!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, **kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_factor`; it scales every group's own base rate (layer-wise decay survives)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, **kwargs))
