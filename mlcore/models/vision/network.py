"""The image classifier: a CNN laid out as the engine's layer code expects of an encoder.

Parameter names follow BERT's shape so that `mlcore.engine.layers` groups a CNN without
knowing it is one: `backbone.embeddings.*` (the stem) is depth 0, `backbone.layers.N.*` (the
blocks, bottom to top) depth N+1, and `head.*` (conv head, pooling, dropout, the Linear) the
top. The blocks sit one level down because the engine's layer pattern needs a dot before
`layers`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

ARCHITECTURES = ("efficientnet-lite0", "resnet")
MODEL_TYPE = "image-classifier"


@dataclass
class ImageConfig:
    """What rebuilds the network (with its weights from safetensors) and feeds it.

    `channels` is what the stored images have (1 or 3); the network always takes 3 (grey is
    repeated), so a grey-trained model still serves RGB pictures and the reverse."""
    architecture: str
    num_labels: int
    label2id: dict[str, int]
    id2label: dict[int, str]
    input_size: int  # the square side, in pixels, that the network sees
    mean: list[float]  # per RGB channel, on pixels scaled to [0, 1]
    std: list[float]
    channels: int = 3
    dropout: float = 0.2  # before the final Linear
    drop_connect: float = 0.0  # stochastic depth: the top block's drop rate (lower blocks linearly less)
    widths: list[int] = field(default_factory=list)  # resnet: channels per stage
    blocks: list[int] = field(default_factory=list)  # resnet: residual blocks per stage

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; choose one of {ARCHITECTURES}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {self.channels}")
        self.id2label = {int(i): label for i, label in self.id2label.items()}  # JSON keys are strings
        if self.num_labels != len(self.label2id) or self.input_size < 1:
            raise ValueError(f"num_labels {self.num_labels} for {len(self.label2id)} labels, input_size "
                             f"{self.input_size}: a label map of num_labels labels and a positive input size")

    # `layers.override_dropout` sets the config attributes BERT knows, when they exist; this
    # alias makes it record the rate in `dropout`, so that a saved model says what it trained with.
    @property
    def classifier_dropout(self) -> float:
        return self.dropout

    @classifier_dropout.setter
    def classifier_dropout(self, p: float) -> None:
        self.dropout = p

    def to_dict(self) -> dict:
        return {"model_type": MODEL_TYPE, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> ImageConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def label_maps(label2id: dict[str, int]) -> tuple[dict[str, int], dict[int, str]]:
    ids = sorted(label2id.values())
    if ids != list(range(len(ids))):
        raise ValueError(f"label ids must be 0..{len(ids) - 1}, not {ids}")
    return dict(label2id), {i: label for label, i in label2id.items()}


class Backbone(nn.Module):
    """Stem, then blocks; block i gets drop rate `drop_connect * i / len(layers)` (EfficientNet's
    schedule: the bottom block is never dropped)."""

    def __init__(self, embeddings: nn.Module, layers: nn.ModuleList, drop_connect: float):
        super().__init__()
        self.embeddings, self.layers, self.drop_connect = embeddings, layers, drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(x)
        for i, block in enumerate(self.layers):
            x = block(x, self.drop_connect * i / len(self.layers))
        return x


class ImageClassifier(nn.Module):
    def __init__(self, config: ImageConfig, backbone: Backbone, head: nn.Sequential):
        super().__init__()
        self.config, self.backbone, self.head = config, backbone, head
        # NHWC weights (and batches, images.pixel_batch): torch's CPU conv kernels (oneDNN) and
        # cuDNN run natively in it: 10-40% faster training than NCHW on the 2-core CPU here.
        self.to(memory_format=torch.channels_last)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised pixels -> (N, num_labels) logits."""
        return self.head(self.backbone(pixel_values))


def head_linear(model: ImageClassifier) -> nn.Linear:
    return model.head.fc


def with_new_head(model: ImageClassifier, label2id: dict[str, int]) -> ImageClassifier:
    """`model` with a freshly initialised final Linear for `label2id` (in place; returned too).
    Seed the global RNG first for a reproducible head."""
    old = head_linear(model)
    model.head.fc = nn.Linear(old.in_features, len(label2id)).to(old.weight.device)
    model.config.label2id, model.config.id2label = label_maps(label2id)
    model.config.num_labels = len(label2id)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
