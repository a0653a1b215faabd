"""Image classifiers: EfficientNet-Lite0 adopted from ImageNet, or a small ResNet from scratch,
as one module layout the engine's freezing and layer-wise learning rates understand."""
from mlcore.models.vision.checkpoint import build, is_image_checkpoint, load, save
from mlcore.models.vision.efficientnet import pretrained_efficientnet
from mlcore.models.vision.network import ImageClassifier, ImageConfig, count_parameters, with_new_head
from mlcore.models.vision.resnet import new_resnet

__all__ = ["ImageClassifier", "ImageConfig", "build", "count_parameters", "is_image_checkpoint", "load",
           "new_resnet", "pretrained_efficientnet", "save", "with_new_head"]
