"""pretrain depends on the checkpoint's files through models/checkpoint: new weights behind the same
`init_from` rerun it under `dvc repro`; unchanged ones do not."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from safetensors.torch import load_file, save_file

from mlcore.models import checkpoint_link

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def dvc(*args: str) -> str:
    proc = subprocess.run(["dvc", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_new_weights_behind_the_same_reference_rerun_pretrain(tiny_project, tiny_base_dir, set_params):
    shutil.copytree(tiny_base_dir, tiny_project / "checkpoints" / "base")
    set_params(pretrain={"init_from": "checkpoints/base", "epochs": 0})
    assert "pretrain" in dvc("repro", "pretrain")
    link = tiny_project / checkpoint_link.LINK
    assert link.is_symlink() and link.resolve() == (tiny_project / "checkpoints" / "base").resolve()
    assert "pretrain" not in json.loads(dvc("status", "--json"))  # the same files: up to date

    weights = tiny_project / "checkpoints" / "base" / "model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0  # the same reference, other weights (an upgraded package, say)
    save_file(tensors, weights, metadata={"format": "pt"})
    changed = json.loads(dvc("status", "--json"))["pretrain"]
    assert {"changed deps": {"models/checkpoint": "modified"}} in changed, changed
    dvc("repro", "pretrain")
    assert "pretrain" not in json.loads(dvc("status", "--json"))

    # Back to from scratch: the params rerun pretrain, which points the link at the placeholder.
    set_params(pretrain={"init_from": None, "epochs": 1})
    dvc("repro", "pretrain")
    assert link.resolve() == (tiny_project / checkpoint_link.PLACEHOLDER).resolve()
    assert "pretrain" not in json.loads(dvc("status", "--json"))
