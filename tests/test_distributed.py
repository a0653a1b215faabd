"""The engine under torchrun: two CPU processes (gloo) share the batches and stay identical."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mlcore.models import modeling
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_two_processes_split_the_batches_and_agree(tmp_path, tiny_base_dir, pooling):
    """With mean pooling too: the unused BERT pooler is dropped, so DDP waits for no gradient."""
    # A free port, not a fixed one: the suite runs in parallel workers (pytest-xdist).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "tests" / "ddp_worker.py"), str(tiny_base_dir), str(tmp_path), pooling]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", **_env()})
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert first == [0, 2, 4, 6] and second == [1, 3, 5, 7]  # 8 batches, half each
    a, b = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    start = modeling.load_classifier(tiny_base_dir, {"a": 0, "b": 1})[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # gradients averaged: replicas identical
    assert any(k.startswith("bert.pooler.") for k in a) == (pooling == "cls")
    weight = "bert.encoder.layer.0.output.dense.weight"
    assert not torch.equal(a[weight], start[weight])


def _env():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    # The worker runs as a script (sys.path[0] is tests/): import this checkout's mlcore, not the installed one.
    return env | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}
