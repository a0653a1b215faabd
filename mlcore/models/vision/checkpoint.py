"""Saving and loading image classifiers: config.json (`model_type: image-classifier`) and
model.safetensors. A checkpoint is rebuilt from its config alone: no network, no pickle."""
from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
from safetensors import SafetensorError

from mlcore import atomic
from mlcore.errors import UserError, reading
from mlcore.models.vision import efficientnet, resnet
from mlcore.models.vision.network import MODEL_TYPE, ImageClassifier, ImageConfig, with_new_head

WEIGHTS = "model.safetensors"
_BUILDERS = {efficientnet.NAME: efficientnet.build, "resnet": resnet.build}


def build(config: ImageConfig) -> ImageClassifier:
    """A randomly initialised network of `config`'s architecture."""
    return _BUILDERS[config.architecture](config)


def save(model: ImageClassifier, out_dir: str | Path, extra: dict | None = None) -> Path:
    """config.json, model.safetensors and, with `extra`, pipeline_info.json; each file is
    written whole or not at all."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out_dir / "config.json", model.config.to_dict())
    with atomic.file(out_dir / WEIGHTS) as partial:
        # save_model drops the aliases of shared tensors (load_model restores them) and makes
        # channels_last weights contiguous.
        safetensors.torch.save_model(model, str(partial), metadata={"format": "pt"})
    if extra:
        atomic.write_text(out_dir / "pipeline_info.json", json.dumps(extra, indent=2, sort_keys=True))
    return out_dir


def read_config(path: str | Path) -> dict | None:
    """The checkpoint's config.json as a dict; None when there is none or it is no JSON object."""
    file = Path(path) / "config.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_image_checkpoint(path: str | Path) -> bool:
    config = read_config(path)
    return config is not None and config.get("model_type") == MODEL_TYPE


def load(path: str | Path, label2id: dict[str, int] | None = None, key: str = "model") -> ImageClassifier:
    """The image classifier saved at `path` (set by `key` in params.yaml), its weights loaded
    strictly; with `label2id`, a fresh final Linear for those labels replaces the saved one."""
    path = Path(path)
    fix = f"Point {key} in params.yaml at a directory saved by the pipeline's image stages, or run them again."
    if not is_image_checkpoint(path):
        raise UserError(f"{path}: not an image-classifier checkpoint (no config.json with model_type "
                        f"{MODEL_TYPE!r}) — set by {key}. {fix}")
    if not (path / WEIGHTS).is_file():
        raise UserError(f"{path}: has no {WEIGHTS} ({key}); only safetensors weights are loaded, never pickles. {fix}")
    with reading(path / "config.json", "an image-classifier config", fix):
        try:
            config = ImageConfig.from_dict(read_config(path))
        except TypeError as err:  # a required field is missing
            raise ValueError(str(err)) from None
    model = build(config)
    try:
        with reading(path / WEIGHTS, "safetensors weights", fix):
            safetensors.torch.load_model(model, path / WEIGHTS, strict=True)
    except (RuntimeError, SafetensorError) as err:  # weights that do not fit the config's network
        raise UserError(f"{path / WEIGHTS}: does not fit the network its config.json describes ({key}): "
                        f"{' '.join(str(err).split())[:300]}. {fix}") from None
    return model if label2id is None else with_new_head(model, label2id)
