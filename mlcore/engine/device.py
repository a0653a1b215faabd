"""Device choice, threads and seeding (mixed precision is in mlcore.engine.precision)."""
from __future__ import annotations

import fcntl
import os
import random
from pathlib import Path

import numpy as np
import torch


def resolve_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        from mlcore.errors import UserError

        raise UserError("runtime.device is 'cuda' (or PIPELINE_DEVICE=cuda) but no CUDA GPU is visible. "
                        "Use 'auto' or 'cpu'.")
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


_HELD_SLOTS: list = []  # open lock files: a slot stays ours while this process lives


def claim_slot(lock_dir: Path, count: int, prefix: str = "gpu") -> int:
    """The lowest of `count` slots no other live process holds (a non-blocking flock per
    slot, released when the process ends, however it ends). With every slot taken, the
    slot is pid % count: more workers than GPUs then share them evenly."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(count):
        handle = (lock_dir / f"{prefix}{slot}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _HELD_SLOTS.append(handle)
        return slot
    return os.getpid() % count


def one_gpu_per_worker(device: torch.device, lock_dir: Path) -> torch.device:
    """Parallel search workers on a machine with several GPUs: one trial per GPU."""
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        return device
    index = claim_slot(lock_dir, torch.cuda.device_count())
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
