"""Device choice, threads and seeding (mixed precision is in mlcore.precision)."""
from __future__ import annotations

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


def configure_threads(num_threads: int | None) -> None:
    if num_threads:
        torch.set_num_threads(num_threads)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
