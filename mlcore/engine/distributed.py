"""Several processes, one per GPU (or CPU process with gloo), launched by torchrun or
`accelerate launch`: both set RANK / WORLD_SIZE / LOCAL_RANK, which is all this reads.

Every rank trains a replica on its own share of the batches and DDP averages the
gradients, so the replicas stay identical; every rank evaluates the full
validation set, so early-stopping decisions agree without communication.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device."""
    if world_size() == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if world_size() == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def shard_count(n_batches: int) -> int:
    """Batches per rank: equal on all ranks (DDP needs the same number of steps everywhere)."""
    return n_batches // world_size() if world_size() > 1 else n_batches


def mine(index: int, n_batches: int) -> bool:
    w = world_size()
    return w == 1 or (index % w == rank() and index < shard_count(n_batches) * w)


def mean(value: float) -> float:
    if world_size() == 1 or not dist.is_initialized():
        return value
    on = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=on)
    dist.all_reduce(t)
    return float(t.item()) / world_size()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (say, training and saving a tokenizer); the other ranks
    wait for it, then run the block themselves (and find its result on disk)."""
    several = world_size() > 1 and dist.is_initialized()
    if several and not is_main():
        dist.barrier()
    yield
    if several and is_main():
        dist.barrier()
