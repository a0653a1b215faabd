"""A small ResNet trained from scratch (pretrain.init_from null) on small images.

ImageNet ResNets open with a 7x7 stride-2 conv and a max-pool, which would shrink a 28-px
image to 7 px before any block; this stem is a 3x3 stride-1 conv (the CIFAR ResNets'), and
the stages after the first halve the size (32 -> 32, 16, 8, 4 with four stages).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from mlcore.models.vision.network import Backbone, ImageClassifier, ImageConfig, label_maps

# Four stages of two blocks (ResNet-18's layout) at a quarter of its widths: fast on a CPU
# at 28-32 px; widen for larger images or data.
WIDTHS = (32, 64, 128, 256)
BLOCKS = (2, 2, 2, 2)
# Per-channel mean/std of what the network sees: a from-scratch net has no dataset's
# statistics to match, and BatchNorm absorbs any remaining offset; this centres [0, 1] pixels.
MEAN = [0.5] * 3
STD = [0.25] * 3


def conv_norm(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Conv then BatchNorm, named `conv`/`norm`: the optimizer keeps `*norm.weight` free of weight decay."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
    return nn.Sequential(OrderedDict(conv=conv, norm=nn.BatchNorm2d(c_out)))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut (a 1x1 conv where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.a, self.b = conv_norm(c_in, c_out, stride), conv_norm(c_out, c_out)
        self.shortcut = conv_norm(c_in, c_out, stride, kernel=1) if stride != 1 or c_in != c_out else nn.Identity()
        nn.init.zeros_(self.b.norm.weight)  # each block starts as the identity: deep nets train from step one

    def forward(self, x: torch.Tensor, drop_rate: float = 0.0) -> torch.Tensor:
        y = self.b(torch.relu(self.a(x)))
        if self.training and drop_rate > 0:  # stochastic depth: drop the residual branch per sample
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=y.dtype) >= drop_rate
            y = y * keep / (1 - drop_rate)
        return torch.relu(y + self.shortcut(x))


def build(config: ImageConfig) -> ImageClassifier:
    widths, blocks = config.widths, config.blocks
    if not widths or len(widths) != len(blocks) or min(widths) < 1 or min(blocks) < 1:
        raise ValueError(f"resnet widths {widths} and blocks {blocks}: one positive width and block count per stage")
    stem = nn.Sequential(OrderedDict([*conv_norm(3, widths[0]).named_children(), ("act", nn.ReLU())]))
    layers, c_in = nn.ModuleList(), widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
        for i in range(count):
            layers.append(BasicBlock(c_in, width, stride=2 if stage > 0 and i == 0 else 1))
            c_in = width
    head = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                     dropout=nn.Dropout(config.dropout), fc=nn.Linear(c_in, config.num_labels)))
    return ImageClassifier(config, Backbone(stem, layers, config.drop_connect), head)


def new_resnet(label2id: dict[str, int], input_size: int = 32, channels: int = 3, widths=WIDTHS, blocks=BLOCKS,
               dropout: float = 0.0, drop_connect: float = 0.0) -> ImageClassifier:
    """A randomly initialised ResNet for `label2id` (seed torch first for a reproducible one)."""
    label_ids, id_labels = label_maps(label2id)
    config = ImageConfig(architecture="resnet", num_labels=len(label2id), label2id=label_ids, id2label=id_labels,
                         input_size=input_size, mean=list(MEAN), std=list(STD), channels=channels,
                         dropout=dropout, drop_connect=drop_connect, widths=list(widths), blocks=list(blocks))
    return build(config)
