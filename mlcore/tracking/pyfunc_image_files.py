"""What an image classifier's MLflow model is made of: its pyfunc code (pyfunc_image.py), the
project modules that code imports, shipped beside it (MLflow code_paths) so that a consumer
needs nothing of this project, and the packages it needs.

The modules ship as a package of their own name, PACKAGE, with their `mlcore.` imports renamed
to it. Loading a model puts its code folder first on sys.path, and child processes inherit that
path: a partial package named `mlcore` there would shadow the real one in every process the
loader starts later (a search pool's workers failed with "No module named mlcore.data.hashing")."""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

CODE = Path(__file__).with_name("pyfunc_image.py")
PACKAGE = "image_classifier_code"
_IMPORTS = re.compile(r"^(\s*)(from|import) mlcore\b", re.MULTILINE)
_MLCORE = Path(__file__).parents[1]
# The modules pyfunc_image imports, and theirs: the networks, the batch transform, the decoder.
SHIPPED = ["__init__.py", "errors.py", "atomic.py", "models/__init__.py", "models/vision/__init__.py",
           "models/vision/checkpoint.py", "models/vision/efficientnet.py", "models/vision/network.py",
           "models/vision/resnet.py", "models/serving_runtime.py", "engine/__init__.py", "engine/images.py",
           "data/__init__.py", "data/pixels.py"]
PACKAGES = ("torch", "safetensors", "pillow", "numpy", "pandas", "efficientnet-lite-pytorch")
_staging: list[tempfile.TemporaryDirectory] = []  # kept until the process exits: MLflow copies it when logging


def is_image_model(model_dir: Path) -> bool:
    config = Path(model_dir) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "image-classifier"


def renamed(source: str) -> str:
    """A module's source with its imports of mlcore made imports of PACKAGE."""
    return _IMPORTS.sub(lambda m: f"{m.group(1)}{m.group(2)} {PACKAGE}", source)


def code_paths() -> list[str]:
    """A copy of just the SHIPPED modules, as the package PACKAGE."""
    staging = tempfile.TemporaryDirectory(prefix="pyfunc-image-")
    _staging.append(staging)
    for name in SHIPPED:
        target = Path(staging.name) / PACKAGE / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(renamed((_MLCORE / name).read_text()))
    return [str(Path(staging.name) / PACKAGE)]
