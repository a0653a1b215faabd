"""What an image classifier's MLflow model is made of: its pyfunc code (pyfunc_image.py), the
project modules that code imports, shipped beside it (MLflow code_paths) so that a consumer
needs nothing of this project, and the packages it needs."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

CODE = Path(__file__).with_name("pyfunc_image.py")
_MLCORE = Path(__file__).parents[1]
# The modules pyfunc_image imports, and theirs: the networks, the batch transform, the decoder.
SHIPPED = ["__init__.py", "errors.py", "atomic.py", "models/__init__.py", "models/vision/__init__.py",
           "models/vision/checkpoint.py", "models/vision/efficientnet.py", "models/vision/network.py",
           "models/vision/resnet.py", "engine/__init__.py", "engine/images.py", "data/__init__.py",
           "data/pixels.py"]
PACKAGES = ("torch", "safetensors", "pillow", "numpy", "pandas", "efficientnet-lite-pytorch")
_staging: list[tempfile.TemporaryDirectory] = []  # kept until the process exits: MLflow copies it when logging


def is_image_model(model_dir: Path) -> bool:
    config = Path(model_dir) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "image-classifier"


def code_paths() -> list[str]:
    """A copy of just the SHIPPED modules, as a package named mlcore."""
    staging = tempfile.TemporaryDirectory(prefix="pyfunc-image-")
    _staging.append(staging)
    for name in SHIPPED:
        target = Path(staging.name) / "mlcore" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(_MLCORE / name, target)
    return [str(Path(staging.name) / "mlcore")]
