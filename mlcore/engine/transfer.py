"""A CPU batch onto the training device, without making the host wait for the device.

On CUDA two things made every step wait for the GPU (`bench/gpu_profile.py` shows it):
- copies from pageable memory, which the driver performs synchronously;
- transformers' SDPA mask check, which asks the GPU whether the attention mask holds any
  padding (`mask.all()`) at every forward pass.
A waiting host stops queueing kernels, and the GPU idles while it launches the next step.
The batch is still on the host here, so the padding question costs nothing: an unpadded
batch goes without a mask (`attention_mask` None: SDPA may take its flash kernel), a padded
one carries `encoder_mask`, its mask already in the 4-D shape (batch, 1, 1, length) that
transformers passes through untouched. The 2-D mask stays for pooling. The copies go from
pinned memory, non-blocking.

Anywhere else the batch moves as it is: the CPU path and its results do not change.
"""
from __future__ import annotations

import torch

# The bench flips this to measure the step as it was before (bench/gpu_profile.py, throughput.py).
HOST_SIDE_MASKS = True


def host_side_masks(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
    """The CPU batch with its masks as described above: `attention_mask` None when nothing
    is padded, else an added `encoder_mask` (batch, 1, 1, length), True where a token counts."""
    mask = batch.get("attention_mask")
    if mask is None:
        return dict(batch)
    if bool(mask.all()):
        return {**batch, "attention_mask": None}
    return {**batch, "encoder_mask": mask.bool()[:, None, None, :]}


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor | None]:
    """The batch on `device`; on CUDA with host-side masks, from pinned memory."""
    if device.type != "cuda" or not HOST_SIDE_MASKS:
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    return {k: None if v is None else v.pin_memory().to(device, non_blocking=True)
            for k, v in host_side_masks(batch).items()}
