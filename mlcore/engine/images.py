"""Image batches: uint8 pixels -> normalised float tensors, with random augmentation in training.

Everything is a batched torch op (no per-image Python, no PIL): one resize, one affine
resampling for the whole augmentation, one fused normalisation. A batch's randomness comes from
its own generator, seeded by (seed, epoch, batch index): a resumed run rebuilds the same
batches, whichever batches came before, and DDP ranks skipping each other's batches change nothing.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MAX_ROTATION_DEG = 15.0  # at strength 1
MAX_SHIFT = 0.1  # of the side, at strength 1
MIN_AREA = 0.5  # the smallest crop's share of the image, at strength 1
MAX_LOG_ASPECT = math.log(4 / 3)  # crop aspect ratio within [3/4, 4/3] at strength 1


@dataclass
class ImageSet:
    pixels: np.ndarray  # (N, H, W, C) uint8, C = 1 (grey) or 3 (RGB)
    labels: np.ndarray | None = None  # (N,) int64 label ids

    def __post_init__(self):
        if self.pixels.ndim != 4 or self.pixels.shape[-1] not in (1, 3) or self.pixels.dtype != np.uint8:
            raise ValueError(f"pixels must be uint8 (N, H, W, 1 or 3), not {self.pixels.dtype} {self.pixels.shape}")
        if self.labels is not None and len(self.labels) != len(self.pixels):
            raise ValueError(f"{len(self.labels)} labels for {len(self.pixels)} images")

    def __len__(self) -> int:
        return len(self.pixels)


@dataclass(frozen=True)
class Augment:
    """strength 0..1 scales a random resized crop (area down to 1 - 0.5*strength, aspect
    jitter), a rotation (up to 15*strength degrees) and a shift (up to 0.1*strength of the side);
    `flip` mirrors half the images left-right (wrong for digits or text, right for clothes and photos)."""
    strength: float = 0.5
    flip: bool = True

    def __post_init__(self):
        if not 0 <= self.strength <= 1:
            raise ValueError(f"augmentation strength must lie in [0, 1], not {self.strength}")

    @property
    def active(self) -> bool:
        return self.strength > 0 or self.flip


def batch_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one batch's augmentation, from (seed, epoch, batch index) alone."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def affine_params(n: int, augment: Augment, generator: torch.Generator | None) -> torch.Tensor:
    """(n, 2, 3) maps from output to input coordinates (affine_grid's theta, both in [-1, 1]):
    input = centre + rotation @ diag(crop width * flip, crop height) @ output."""
    u = torch.rand(n, 7, generator=generator) * 2 - 1  # independent uniforms in [-1, 1]
    s = augment.strength
    area = 1 - MIN_AREA * s * (u[:, 0] + 1) / 2
    log_aspect = MAX_LOG_ASPECT * s * u[:, 1]
    w = torch.sqrt(area * log_aspect.exp()).clamp(max=1)  # the crop's sides, as fractions of the image's
    h = torch.sqrt(area / log_aspect.exp()).clamp(max=1)
    angle = torch.deg2rad(MAX_ROTATION_DEG * s * u[:, 2])
    cx = (1 - w) * u[:, 3] + 2 * MAX_SHIFT * s * u[:, 4]  # the crop anywhere inside, then a shift
    cy = (1 - h) * u[:, 5] + 2 * MAX_SHIFT * s * u[:, 6]
    flip = torch.ones(n)
    if augment.flip:
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos * w * flip, -sin * h, cx], 1),
                        torch.stack([sin * w * flip, cos * h, cy], 1)], 1)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear to size x size; antialiased when shrinking (plain bilinear would alias fine texture)."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = size < max(x.shape[-2:])
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def pixel_batch(pixels: np.ndarray, input_size: int, mean, std, augment: Augment | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float32 (B, 3, S, S): resized to S = input_size, augmented when
    `augment` is given (training), normalised by the per-RGB-channel `mean` and `std` (of pixels
    in [0, 1]); grey images are repeated to 3 channels, by the normalisation's broadcast."""
    # np.require copies only a read-only (memory-mapped) or strided array: torch wants writable memory.
    x = torch.from_numpy(np.require(pixels, requirements=["C", "W"])).permute(0, 3, 1, 2).float()  # 0..255
    x = resize(x, input_size)
    if augment is not None and augment.active:
        # After the resize, at the output size: without augmentation the batch is exactly the
        # resized one, and zeros padding darkens nothing that was inside the picture (sampling
        # an upscaled source directly would blend black into its border pixels). Zeros fill what
        # a rotation or shift uncovers with black: Fashion-MNIST's background; reflection would
        # mirror garments that touch the frame into phantom shapes (torchvision's RandomAffine fills 0 too).
        theta = affine_params(len(x), augment, generator)
        grid = F.affine_grid(theta, [len(x), x.shape[1], input_size, input_size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    scale = 1 / (255 * torch.tensor(std, dtype=torch.float32))
    shift = torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)
    x = torch.addcmul(-shift.view(1, 3, 1, 1), x, scale.view(1, 3, 1, 1))
    return x.contiguous(memory_format=torch.channels_last)  # the layout the networks run in (vision.network)


def batches(data: ImageSet, batch_size: int, order: np.ndarray | None, input_size: int, mean, std,
            augment: Augment | None = None, seed: int = 0, epoch: int = 0,
            ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Yield (row indices, {"pixel_values", "labels" when `data` has them}) in `order`
    (None: the stored order); batch i is augmented with batch_generator(seed, epoch, i)."""
    order = np.arange(len(data)) if order is None else order
    augment = augment if augment is not None and augment.active else None
    for i, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start : start + batch_size]
        generator = batch_generator(seed, epoch, i) if augment else None
        batch = {"pixel_values": pixel_batch(data.pixels[idx], input_size, mean, std, augment, generator)}
        if data.labels is not None:
            batch["labels"] = torch.from_numpy(np.asarray(data.labels[idx], dtype=np.int64))
        yield idx, batch


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """One epoch's shuffled row order, from (seed, epoch) alone (as the text batches' order)."""
    return np.random.default_rng([seed, epoch]).permutation(n)
