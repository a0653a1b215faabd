"""MLflow "model from code" for the image classifier.

MLflow copies this file into the logged model and runs it at load time, so no pickle is ever
written or read. It imports the project's network, decoder and batch transform from the copy
shipped beside it (pyfunc_image_files: the SHIPPED modules as the package
`image_classifier_code`, so that it never shadows a `mlcore` of the consumer's): consumers need
torch, safetensors, Pillow and efficientnet-lite-pytorch, nothing of this project.

    model = mlflow.pyfunc.load_model("models:/<name>@champion")
    model.predict(pd.DataFrame({"image": [open("shoe.png", "rb").read()]}))  # -> labels
    model.predict(df, params={"return_scores": True})  # -> label + calibrated per-class scores

Each image goes through exactly what training saw: decoded by Pillow, converted to the
training channels (transparency on white), resized and centre-cropped to the stored size, then
resized to the network's input size and normalised. In a JSON request to `mlflow models serve`
the `image` column carries base64 text, which MLflow decodes to bytes. A `path` column is
refused: a request must never make the server read its own files (batch scoring reads paths
itself and passes the bytes).

Format: the one register chose (register.serve_format; torch, torch-bf16, onnx or onnx-int8),
read from the `serving` artifact by serving_runtime, with the same fallback to torch fp32 as the
text model when onnxruntime is missing or the graph fails to load.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

try:  # in a logged model: the copy shipped beside it (pyfunc_image_files.PACKAGE), on sys.path at load time
    from image_classifier_code.data.pixels import decode_image
    from image_classifier_code.engine.images import pixel_batch
    from image_classifier_code.models import serving_runtime, vision
except ImportError:  # in the project, where MLflow runs this file once while logging it
    from mlcore.data.pixels import decode_image
    from mlcore.engine.images import pixel_batch
    from mlcore.models import serving_runtime, vision

BATCH_SIZE = 64


def _stored_size(model_dir: Path) -> tuple[int, int] | None:
    """(height, width) prepare stored the training images at (finetune's pipeline_info.json)."""
    info = model_dir / "pipeline_info.json"
    text = json.loads(info.read_text()).get("stored_size") if info.is_file() else None
    return tuple(int(v) for v in text.split("x")) if text else None


def as_bytes(value, row: int) -> bytes:
    """An `image` cell: bytes, or base64 text (what a JSON request carries)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValueError(f"row {row}: the image column holds text that is not base64") from None
    raise ValueError(f"row {row}: the image column must hold the image file's bytes (base64 in JSON), "
                     f"not {type(value).__name__}")


class ImageClassifierModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        path = Path(context.artifacts["model_dir"])
        self.model = vision.load(path).eval()
        c = self.model.config
        self.labels = [c.id2label[i] for i in range(c.num_labels)]
        self.size = _stored_size(path)
        raw = json.loads((path / "config.json").read_text()).get("temperature")
        self.temperature = float(raw) if raw else 1.0
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"config.json temperature is {raw!r}; it must be a positive number")
        self.load_format(context.artifacts.get("serving"))

    def load_format(self, serving_dir: str | None) -> None:
        """The format register chose (serving_runtime); an ONNX one that cannot run falls back to torch."""
        self.served_format, self.session, self.fallback_reason = serving_runtime.load(serving_dir)
        self.autocast = torch.bfloat16 if self.served_format == "torch-bf16" else None

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            return torch.from_numpy(self.session.run(["logits"], {"pixels": pixels.numpy()})[0])
        with torch.autocast("cpu", dtype=self.autocast, enabled=self.autocast is not None):
            return self.model(pixels).float()

    def _images(self, model_input) -> list[bytes]:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame({"image": list(model_input)})
        if "image" not in frame.columns:
            refused = " (paths are refused: send the file's bytes, so that no request reads the server's files)" \
                if "path" in frame.columns else ""
            raise ValueError(f"the input needs an `image` column of image file bytes (base64 in JSON){refused}; "
                             f"it has {list(frame.columns)}")
        return [as_bytes(v, i) for i, v in enumerate(frame["image"])]

    @torch.inference_mode()
    def logits(self, images: list[bytes]) -> torch.Tensor:
        c = self.model.config
        out = torch.zeros((len(images), len(self.labels)), dtype=torch.float32)
        for start in range(0, len(images), BATCH_SIZE):
            chunk = images[start : start + BATCH_SIZE]
            pixels = np.stack([decode_image(b, c.channels, self.size, f"row {start + i}") for i, b in enumerate(chunk)])
            out[start : start + len(chunk)] = self._forward(pixel_batch(pixels, c.input_size, c.mean, c.std))
        return out

    def predict(self, context, model_input, params=None):
        logits = self.logits(self._images(model_input))
        labels = [self.labels[i] for i in logits.argmax(1).tolist()]
        if (params or {}).get("return_scores"):
            probs = torch.softmax(logits / self.temperature, dim=-1).numpy()
            out = pd.DataFrame({"label": labels})
            for i, name in enumerate(self.labels):
                out[f"score_{name}"] = probs[:, i]
            return out
        return pd.Series(labels, name="label")


mlflow.models.set_model(ImageClassifierModel())
