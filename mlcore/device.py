"""Device choice, mixed precision and seeding."""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


def resolve_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        from mlcore.errors import UserError

        raise UserError("runtime.device is 'cuda' (or PIPELINE_DEVICE=cuda) but no CUDA GPU is visible. Use 'auto' or 'cpu'.")
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(preference)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (fp32 master weights); plain fp32 on the CPU, where bf16 is slower."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def configure_threads(num_threads: int | None) -> None:
    if num_threads:
        torch.set_num_threads(num_threads)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
