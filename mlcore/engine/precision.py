"""Mixed precision and fast-math settings per device."""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

# CPU flags (Linux /proc/cpuinfo names) of native bf16 matrix instructions: with them,
# bf16 autocast trains ~1.7x faster than fp32; without them, bf16 is emulated and slower.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flags(flags: str) -> list[str]:
    """Which native-bf16 flags a CPU flags string (whitespace-separated, as /proc/cpuinfo's
    `flags` line) holds; empty: no native bf16."""
    present = set(flags.split())
    return [flag for flag in NATIVE_BF16_FLAGS if flag in present]


@functools.cache
def read_cpu_flags(path: str = "/proc/cpuinfo") -> str:
    """The first `flags` line of /proc/cpuinfo; "" where there is none (macOS, Windows,
    ARM's `Features`): such CPUs then train in fp32."""
    try:
        text = Path(path).read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return value
    return ""


def resolve(precision: str, device: torch.device, cpu_flags: str | None = None) -> str:
    """auto: bf16 on CUDA GPUs that have it, fp16 (with a grad scaler) on older ones; on the
    CPU bf16 where it has native bf16 (AVX512-BF16 or AMX), else fp32. `cpu_flags`: the CPU's
    flags string (default: read from /proc/cpuinfo)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_bf16_flags(read_cpu_flags() if cpu_flags is None else cpu_flags) else "fp32"
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
