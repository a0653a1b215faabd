"""The ensemble teacher of distillation (distill.teacher: ensemble): the fine-tuned classifier plus
members fine-tuned on the same rows with the search's next-best settings, each with its own seed.
The student learns from the members' averaged logits.

A finished member is saved under the work folder with the fingerprint of what made it, so a
stage killed while training the third member reuses the first two when it reruns.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from mlcore import atomic
from mlcore.engine.settings import TrainSettings

DONE = "member.json"  # written last into a finished member's folder: its fingerprint


def member_picks(trials: pd.DataFrame, best: dict, extra: int, searched: frozenset[str]) -> list[dict]:
    """The searched settings of `extra` more members: the next-best finished trials by validation macro-F1
    (the picked one left out), each as {name: value} for the names the search samples, learning rate
    and optimizer among them. Fewer such trials than `extra`: the picked settings again."""
    names = [n for n in ("learning_rate", "optimizer", *sorted(searched)) if n in trials.columns]
    done = trials[(trials["state"] == "COMPLETE") & (trials["trial"] != best.get("trial"))]
    done = done.sort_values(["val_macro_f1", "trial"], ascending=[False, True], kind="stable")
    picks = [{n: _plain(row[n]) for n in names if not _missing(row[n])} for _, row in done.head(extra).iterrows()]
    fallback = {n: best[n] for n in names if n in best}
    return picks + [dict(fallback) for _ in range(extra - len(picks))]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value):
    """A table cell as the Python value the settings take (numpy scalars to int, float, bool)."""
    return value.item() if hasattr(value, "item") else value


def member_settings(base: TrainSettings, pick: dict, index: int) -> TrainSettings:
    """Member `index` (1-based; 0 is the fine-tuned classifier): the base settings with the pick's values,
    and a seed of its own so that two members with the same settings still differ."""
    return dataclasses.replace(base, **pick, seed=base.seed + index)


def trained_members(picks: list[TrainSettings], train: Callable[[TrainSettings, Path], torch.nn.Module],
                    save: Callable[[torch.nn.Module, Path], None], load: Callable[[Path], torch.nn.Module],
                    work: Path, fingerprint: str) -> list[torch.nn.Module]:
    """One model per settings: `train(settings, checkpoint_dir)` (resumable in that folder), then
    `save(model, folder)`; a member already saved with the same fingerprint is `load`ed instead."""
    members = []
    for index, settings in enumerate(picks, start=1):
        folder, mark = work / f"member-{index}", _digest(f"{fingerprint}-{settings.fingerprint()}")
        done = folder / DONE
        if done.is_file() and json.loads(done.read_text()).get("fingerprint") == mark:
            members.append(load(folder))
            continue
        model = train(settings, work / f"member-{index}-training")
        with atomic.directory(folder) as out:
            save(model, out)
            (out / DONE).write_text(json.dumps({"fingerprint": mark}))
        members.append(model)
    return members


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
