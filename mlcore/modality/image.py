"""Images: uint8 pixels resized and augmented per batch, a CNN (EfficientNet-Lite0 from ImageNet,
or a small ResNet) with a fresh head, and logistic regression on the pixels as the baseline."""
from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image as PILImage

from mlcore.data import images as image_data
from mlcore.engine.images import Augment, ImageSet
from mlcore.engine.loop import FitResult
from mlcore.engine.settings import TrainSettings
from mlcore.models import image_classifier, pixel_baseline, vision

# augment: auto = flips only (augment_flip). On the Fashion-MNIST demo's full budget (5 epochs, 54,000
# images, the same searched learning rate) strength 0.5 scored 0.9330 on the test set and flips alone
# 0.9429, ahead at every epoch (docs/benchmarks.md#images); crops and rotations may pay on longer runs,
# which `search.space.augment` can test.
AUGMENT_DEFAULT = 0.0


@dataclass(frozen=True)
class ImageShape:
    """What the network sees (input_size) and what prepare stored."""
    input_size: int
    stored: tuple[int, int, int]  # height, width, channels

    def report(self) -> dict:
        return {"input_size": self.input_size, "stored_size": f"{self.stored[0]}x{self.stored[1]}",
                "channels": self.stored[2]}

    def describe(self) -> str:
        return (f"images stored at {self.stored[0]}x{self.stored[1]}x{self.stored[2]}, "
                f"seen at {self.input_size}x{self.input_size}")


def augment_of(s: TrainSettings) -> Augment:
    return Augment(strength=AUGMENT_DEFAULT if s.augment == "auto" else float(s.augment), flip=s.augment_flip)


def _precision_for(architecture: str, setting: str, device: torch.device) -> str:
    """precision auto trains EfficientNet-Lite0 in fp32 on a CPU: its depthwise convolutions ran
    1.4-2x slower in bf16 autocast than in fp32 on the 2-core AMD EPYC (avx512_bf16), where the ResNet
    gained from bf16."""
    return "fp32" if setting == "auto" and device.type == "cpu" and architecture != "resnet" else setting


class Image:
    name = "image"
    row_column = "source"  # what identifies a row to a person (predictions, the card)

    def processor(self, checkpoint: Path):
        return None  # the model's config carries its input size and normalisation

    def choose(self, setting, checkpoint: Path, processor, train_df: pd.DataFrame) -> ImageShape:
        config = json.loads((Path(checkpoint) / "config.json").read_text())
        first = train_df.iloc[0]
        return ImageShape(int(config["input_size"]), (int(first["height"]), int(first["width"]),
                                                     int(first["channels"])))

    def fixed(self, processor) -> None:
        return None

    def encode(self, processor, df: pd.DataFrame, label2id: dict[str, int], shape) -> ImageSet:
        unknown = set(df["label"]) - set(label2id)
        if unknown:
            raise ValueError(f"labels {sorted(unknown)} are not in the label map")
        return ImageSet(image_data.to_array(df), df["label"].map(label2id).to_numpy(dtype=np.int64, copy=True))

    def joined(self, a: ImageSet, b: ImageSet) -> ImageSet:
        return ImageSet(np.concatenate([a.pixels, b.pixels]), np.concatenate([a.labels, b.labels]))

    def precision(self, setting: str, checkpoint: Path, device: torch.device) -> str:
        """The precision setting training on `checkpoint`'s network uses (auto resolved for it)."""
        architecture = json.loads((Path(checkpoint) / "config.json").read_text())["architecture"]
        return _precision_for(architecture, setting, device)

    def adjusted(self, settings: TrainSettings, checkpoint: Path, device: torch.device) -> TrainSettings:
        """The settings training will use on `checkpoint`'s network."""
        return dataclasses.replace(settings, precision=self.precision(settings.precision, checkpoint, device))

    def finetune(self, checkpoint: Path, label2id: dict[str, int], train: ImageSet, val: ImageSet,
                 settings: TrainSettings, device: torch.device, on_epoch: Callable[[dict], None] | None = None,
                 checkpoint_dir: Path | None = None, fingerprint: str = "", keep_best: bool = True,
                 processor=None) -> tuple[torch.nn.Module, FitResult]:
        settings = self.adjusted(settings, checkpoint, device)
        return image_classifier.finetune(checkpoint, label2id, train, val, settings, device, augment_of(settings),
                                         on_epoch, checkpoint_dir, fingerprint, keep_best)

    def predict_logits(self, model, data: ImageSet, device: torch.device, processor, batch_size: int = 256,
                       precision_name: str = "fp32") -> np.ndarray:
        return image_classifier.predict_logits(model, data, device, batch_size, precision_name)

    def load_classifier(self, path: Path, key: str = "model"):
        return vision.load(path, key=key), None

    def save(self, model, processor, out: Path, extra: dict | None = None, shape=None) -> Path:
        return vision.save(model.cpu(), out, extra=extra)

    def model_inputs(self, df: pd.DataFrame) -> pd.DataFrame:
        """The stored pixels as lossless PNG bytes: the registered model decodes them to the same pixels."""
        return pd.DataFrame({"image": [png_bytes(p) for p in image_data.to_array(df)]})

    def card_facts(self, classifier_dir: Path) -> dict:
        config = json.loads((classifier_dir / "config.json").read_text())
        info_file = classifier_dir / "pipeline_info.json"
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}  # finetune's summary
        return {"modality": "image", "architecture": config["architecture"], "input_size": config["input_size"],
                "channels": config["channels"], "mean": [round(m, 4) for m in config["mean"]],
                "std": [round(s, 4) for s in config["std"]], "stored_size": info.get("stored_size", "?"),
                "parameters": f"{vision.count_parameters(vision.load(classifier_dir)):,}"}

    def baseline(self, train_df: pd.DataFrame, train_y, test_df: pd.DataFrame, test_y, labels: list[str]) -> dict:
        return pixel_baseline.evaluate(image_data.to_array(train_df), np.asarray(train_y),
                                       image_data.to_array(test_df), test_y, labels)


def png_bytes(pixels: np.ndarray) -> bytes:
    """(H, W, C) uint8 as PNG (lossless, so decoding gives these pixels back)."""
    buffer = io.BytesIO()
    PILImage.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = Image()
