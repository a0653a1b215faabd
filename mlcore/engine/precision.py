"""Mixed precision and fast-math settings per device."""
from __future__ import annotations

import contextlib

import torch


def resolve(precision: str, device: torch.device) -> str:
    """auto: bf16 on CUDA GPUs that have it, fp16 (with a grad scaler) on older ones,
    fp32 on the CPU (bf16 autocast there is opt-in: it needs AMX/AVX512-BF16 to pay off)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device):
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def enable_tf32(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
