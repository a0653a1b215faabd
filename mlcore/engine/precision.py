"""Mixed precision and fast-math settings per device."""
from __future__ import annotations

import contextlib
import functools
import platform
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


def cpuinfo_value(text: str, key: str) -> str:
    """The value of the first `key` line of /proc/cpuinfo's text ("flags", "model name"); "" where
    there is none (macOS, Windows; ARM calls its flags `Features`)."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return ""


@functools.cache
def read_cpuinfo(path: str = "/proc/cpuinfo") -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def read_cpu_flags(path: str = "/proc/cpuinfo") -> str:
    """The first `flags` line of /proc/cpuinfo; "" where there is none: such CPUs then train in fp32."""
    return cpuinfo_value(read_cpuinfo(path), "flags")


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


def numerics(device: torch.device, resolved: str, cpuinfo: str | None = None) -> dict:
    """What decides a run's floating-point bits, for its lineage: the same values (and the same
    inputs and seeds) give bit-identical weights; a different value may change the last bits.
    The kernels torch picks depend on its version, its CPU capability (AVX512, AVX2, ...), the
    native-bf16 flags (bf16 matmuls run on AMX or AVX512-BF16 kernels) and the CPU itself
    (MKL's fp32 code path); reductions split by thread count. `resolved`: the precision in use
    (`resolve`'s result); `cpuinfo`: /proc/cpuinfo's text (default: this machine's)."""
    info = read_cpuinfo() if cpuinfo is None else cpuinfo
    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else device.type,
        "precision": resolved,
        "cpu": cpuinfo_value(info, "model name") or platform.machine() or "unknown",
        "cpu_bf16_flags": " ".join(cpu_bf16_flags(cpuinfo_value(info, "flags"))) or "none",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__ + (f" (CUDA {torch.version.cuda})" if cuda else ""),
    }


def autocast(precision: str, device: torch.device):
    # bf16-weights: the model is in bf16 itself while it trains (mlcore.engine.master_weights),
    # and in fp32 afterwards, when it predicts as it will be served
    if precision in ("fp32", "bf16-weights"):
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
