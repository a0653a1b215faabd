"""Resumable training state, written without pickle.

A checkpoint is a directory: `model.safetensors` (the weights now), `best.safetensors`
(the best epoch's weights, when kept), `optimizer.safetensors` (every optimizer state
tensor plus the RNG states) and `state.json` (optimizer hyperparameters, scheduler
state, epoch, history, early-stopping counters). It is written to a temporary
directory and swapped into place (mlcore.atomic), so a crash mid-save leaves the previous one intact.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mlcore import atomic

STATE = "state.json"


@dataclass
class TrainState:
    epoch: int  # epochs completed
    step: int  # optimizer steps taken
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float | None = None
    waited: int = 0
    fingerprint: str = ""


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("state."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save(directory: Path, weights: dict[str, torch.Tensor], optimizer, scheduler, state: TrainState,
         best: dict[str, torch.Tensor] | None) -> None:
    """`weights`: the model's state on the CPU, each tensor its own copy (save_file rejects
    tensors that share storage, as tied embeddings do)."""
    with atomic.directory(Path(directory)) as tmp:
        save_file(weights, str(tmp / "model.safetensors"))
        if best is not None:
            save_file({k: v.contiguous() for k, v in best.items()}, str(tmp / "best.safetensors"))
        tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        meta = {"train": vars(state), "optimizer": opt_meta, "scheduler": scheduler.state_dict()}
        (tmp / STATE).write_text(json.dumps(meta, default=_jsonable))


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to a checkpoint")


def peek(directory: Path) -> TrainState | None:
    path = Path(directory) / STATE
    if not path.is_file():
        return None
    return TrainState(**json.loads(path.read_text())["train"])


def load(directory: Path, load_weights: Callable[[dict[str, torch.Tensor]], None], optimizer, scheduler
         ) -> tuple[TrainState, dict[str, torch.Tensor] | None]:
    """Restore weights (through `load_weights`, e.g. a model's load_state_dict), optimizer,
    scheduler and RNG states in place; returns (state, best weights)."""
    directory = Path(directory)
    meta = json.loads((directory / STATE).read_text())
    load_weights(load_file(str(directory / "model.safetensors")))
    tensors = load_file(str(directory / "optimizer.safetensors"))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    best_path = directory / "best.safetensors"
    best = load_file(str(best_path)) if best_path.is_file() else None
    return TrainState(**meta["train"]), best
