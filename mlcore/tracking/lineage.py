"""Where a registered version came from: the data, each stage's record in dvc.lock, the code, the
params, the runs, the search and the hardware (numerics: what decides the weights' bits).

The whole record is the version's `lineage.json` artifact (also in the register run); the few
facts a person reads at a glance are its tags. With it, `git checkout <git.commit> && dvc checkout`
(or `dvc pull`) restores the exact inputs, and the run ids lead to every logged number.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from mlcore.config import STAGES, Config
from mlcore.tracking.model_card import describe_numerics
from mlcore.tracking.runs import lineage_tags
from mlcore.tracking.tags import NUMERICS_TAG, STUDY_TAG

STAGES_BEFORE_REGISTER = STAGES[:STAGES.index("register")]  # whose outputs a registered version is made from


def canonical_md5(value) -> str:
    return hashlib.md5(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def dvc_lock_md5s(lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """Each upstream stage's dvc.lock entry (its cmd, deps, params and outs with their hashes),
    as one md5 per stage; 'missing' for a stage dvc.lock does not record."""
    path = Path(lock_path)
    stages = ((yaml.safe_load(path.read_text()) or {}).get("stages") or {}) if path.is_file() else {}
    return {stage: canonical_md5(stages[stage]) if stage in stages else "missing" for stage in STAGES_BEFORE_REGISTER}


def version_lineage(cfg: Config, *, pipeline_run_id: str | None, pretrain: dict, finetune: dict, best: dict,
                    test_digest: str) -> dict:
    """Everything a version registered from this workspace's outputs is made from (lineage.json)."""
    code = lineage_tags(cfg)
    return {
        "git": {"commit": code["git.commit"], "dirty": code["git.dirty"] == "true"},
        "data": {"raw_path": code["data.raw_path"], "raw_dvc_md5": code["data.raw_dvc_md5"],
                 "test_digest": test_digest},
        "dvc_lock": dvc_lock_md5s(),  # each upstream stage's entry, as one md5
        "params_md5": canonical_md5(cfg.model_dump(exclude={"tracking"})),
        "runs": {"pipeline": pipeline_run_id or "none (run by dvc repro)",
                 "pretrain": pretrain.get("mlflow_run_id") or "unknown",
                 "finetune": finetune.get("mlflow_run_id") or "unknown"},
        "search": {"study": str(best.get("study", "unknown")), "best_trial": str(best.get("trial", "unknown"))},
        "checkpoint": str(cfg.pretrain.init_from or "from scratch"),
        "numerics": finetune.get("numerics") or {},
    }


def version_tags(record: dict) -> dict[str, str]:
    """The lineage a person reads at a glance in the registry's version list: the code, the data, the
    starting checkpoint, the search and the numerics in one line. Hashes stay in lineage.json."""
    tags = {"git.commit": record["git"]["commit"] + (" (uncommitted changes)" if record["git"]["dirty"] else ""),
            "data.raw_path": record["data"]["raw_path"], "checkpoint": record["checkpoint"],
            STUDY_TAG: record["search"]["study"]}
    if record["numerics"]:
        tags[NUMERICS_TAG] = describe_numerics(record["numerics"])
    return tags
