"""Image training throughput: our loop against a plain PyTorch loop, same model, data and batch size.

    .venv/bin/python bench/image_throughput.py [--rows 6000] [--epochs 1] [--seeds 42 1 2] [--size 48]

Both fine-tune EfficientNet-Lite0 from its ImageNet weights (a fresh 10-class head) on the same
seeded sample of Fashion-MNIST's training images, at --size px, batch 64, AdamW at 2e-3 with
linear decay, the same augmentation strength, one after the other in this process:

- ours: `mlcore.models.image_classifier.train_classifier`, what the pipeline runs (uint8 pixels
  resized and augmented a batch at a time with one affine_grid + grid_sample, channels_last,
  precision auto, which is fp32 for this network on a CPU);
- plain: the loop of the PyTorch tutorials: a `DataLoader` over a Dataset of decoded images that
  transforms each sample on its own (resize, random affine, normalise; tensor ops, as torchvision
  is not installable here), NCHW fp32, zero_grad / forward / backward / step.

Throughput is training images / training seconds (model loading and evaluation outside the
clock). Both are scored on the same 2,000 validation images by the same prediction function.
Fashion-MNIST comes from data/raw/fashion-mnist (`python -m mlcore.data.fashion_mnist`, which
fetches it from Debian's package); skips (exit 0) when it cannot be had. One JSON object on the
last stdout line.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mlcore.config.training import to_settings
from mlcore.data import idx
from mlcore.engine import images
from mlcore.engine.images import Augment, ImageSet
from mlcore.errors import UserError
from mlcore.models import image_classifier
from mlcore.models.vision import efficientnet

ROOT = Path(__file__).resolve().parents[1]
LR, BATCH, VAL_ROWS = 2e-3, 64, 2000


def load(folder: Path, rows: int, seed: int) -> tuple[ImageSet, ImageSet]:
    from mlcore.data import fashion_mnist

    fashion_mnist.fetch(folder)
    pixels, labels = idx.read_pair(folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz")
    order = np.random.default_rng(seed).permutation(len(pixels))
    pick = lambda ids: ImageSet(np.ascontiguousarray(pixels[ids][..., None]), labels[ids].astype(np.int64))  # noqa: E731
    return pick(order[:rows]), pick(order[rows : rows + VAL_ROWS])


class Samples(torch.utils.data.Dataset):
    """The tutorials' Dataset: one decoded image at a time, transformed on its own."""

    def __init__(self, data: ImageSet, size: int, augment: Augment, mean, std):
        self.data, self.size, self.augment = data, size, augment
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.data.pixels[i]).permute(2, 0, 1).float().div(255).expand(3, -1, -1)
        x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False)
        theta = images.affine_params(1, self.augment, None)
        grid = F.affine_grid(theta, [1, 3, self.size, self.size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        return (x - self.mean) / self.std, int(self.data.labels[i])


def plain(train: ImageSet, epochs: int, size: int, augment: Augment, seed: int) -> tuple[torch.nn.Module, float]:
    torch.manual_seed(seed)
    model = efficientnet.pretrained_efficientnet({str(i): i for i in range(10)}, input_size=size, channels=1)
    model = model.to(memory_format=torch.contiguous_format)
    c = model.config
    loader = torch.utils.data.DataLoader(Samples(train, size, augment, c.mean, c.std), batch_size=BATCH,
                                         shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    steps = epochs * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
    return model, time.perf_counter() - start


def ours(train: ImageSet, val: ImageSet, epochs: int, size: int, augment: Augment, seed: int):
    torch.manual_seed(seed)
    model = efficientnet.pretrained_efficientnet({str(i): i for i in range(10)}, input_size=size, channels=1)
    settings = to_settings(epochs=epochs, batch_size=BATCH, learning_rate=LR, seed=seed, warmup=0.0,
                           precision="fp32", resume=False)  # fp32: what precision auto picks for it on a CPU
    result = image_classifier.train_classifier(model, train, val, settings, torch.device("cpu"), augment)
    return model, result.train_seconds


def accuracy(model, val: ImageSet) -> float:
    preds = image_classifier.predict_logits(model, val, torch.device("cpu")).argmax(1)
    return float((preds == val.labels).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "raw" / "fashion-mnist")
    args = parser.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    try:
        train, val = load(args.data, args.rows, 0)
    except UserError as err:
        print(json.dumps({"skipped": str(err)}))
        return 0
    augment, rows = Augment(strength=0.5, flip=True), []
    for seed in args.seeds:
        plain_model, plain_s = plain(train, args.epochs, args.size, augment, seed)
        ours_model, ours_s = ours(train, val, args.epochs, args.size, augment, seed)
        n = len(train) * args.epochs
        rows.append({"seed": seed, "plain_images_per_s": n / plain_s, "ours_images_per_s": n / ours_s,
                     "plain_val_accuracy": accuracy(plain_model, val), "ours_val_accuracy": accuracy(ours_model, val)})
        print(rows[-1], file=sys.stderr)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "seed"}
    print(json.dumps({"benchmark": "image_throughput", "model": "efficientnet-lite0", "input_size": args.size,
                      "batch_size": BATCH, "train_rows": args.rows, "epochs": args.epochs,
                      "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                      "torch": torch.__version__, **mean,
                      "speedup": mean["ours_images_per_s"] / mean["plain_images_per_s"], "per_seed": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
