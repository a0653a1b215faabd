"""Where a registered version came from, as model-version tags: the data, each stage's record in
dvc.lock, the code, the params, the runs, the search and the hardware (numerics.*: what decides
the weights' bits).

With these, `git checkout <git.commit> && dvc checkout` (or `dvc pull`) restores the exact
inputs, and the run ids lead to every logged number.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from mlcore.config import STAGES, Config
from mlcore.tracking.runs import lineage_tags, numerics_tags
from mlcore.tracking.tags import STUDY_TAG, TEST_DIGEST_TAG

STAGES_BEFORE_REGISTER = STAGES[:STAGES.index("register")]  # whose outputs a registered version is made from


def canonical_md5(value) -> str:
    return hashlib.md5(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def dvc_lock_md5s(lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """Each upstream stage's dvc.lock entry (its cmd, deps, params and outs with their hashes),
    as one md5 per stage; 'missing' for a stage dvc.lock does not record."""
    path = Path(lock_path)
    stages = ((yaml.safe_load(path.read_text()) or {}).get("stages") or {}) if path.is_file() else {}
    return {stage: canonical_md5(stages[stage]) if stage in stages else "missing" for stage in STAGES_BEFORE_REGISTER}


def version_tags(cfg: Config, *, pipeline_run_id: str | None, pretrain: dict, finetune: dict, best: dict,
                 test_digest: str) -> dict[str, str]:
    """The lineage tags of a version registered from this workspace's outputs."""
    tags = {k: v for k, v in lineage_tags(cfg).items() if not k.startswith("mlflow.")}
    tags |= {f"dvc.lock.{stage}": md5 for stage, md5 in dvc_lock_md5s().items()}
    tags |= {
        "params.md5": canonical_md5(cfg.model_dump(exclude={"tracking"})),
        TEST_DIGEST_TAG: test_digest,
        "run.pipeline": pipeline_run_id or "none (run by dvc repro)",
        "run.pretrain": pretrain.get("mlflow_run_id") or "unknown",
        "run.finetune": finetune.get("mlflow_run_id") or "unknown",
        STUDY_TAG: str(best.get("study", "unknown")),
        "optuna.best_trial": str(best.get("trial", "unknown")),
        "device": str(finetune.get("device", "unknown")),
        "precision": str(finetune.get("precision", "unknown")),
        "checkpoint": str(cfg.pretrain.init_from or "from scratch"),
    } | numerics_tags(finetune.get("numerics", {}))
    return {k: str(v) for k, v in tags.items()}
