"""The user's input paths, checked before anything touches them.

DVC's status (it hashes prepare.input, and the checkpoint behind models/checkpoint), the MLflow
lineage tags (every stage's run records prepare.input's md5) and the readers each open these
paths, and each fails its own way on one the operating system refuses: a broken or looping
link, no permission, a file where a folder should be. Checked once when a command starts, before
DVC, the user gets one paragraph naming the path and the key that gave it.
"""
from __future__ import annotations

import os
from pathlib import Path

from mlcore.config import STAGES, Config, load_config
from mlcore.errors import UserError, path_problem
from mlcore.models.checkpoint_link import PACKAGE

_FIX = {
    "--params": "Pass a params file that this user can read (e.g. --params params.yaml)",
    "prepare.input": "Point prepare.input in params.yaml at the data file itself (.csv, .tsv, .jsonl or "
                     ".parquet; for images also a folder of class folders or of IDX files), or fix the path, "
                     "link or permissions",
    "prepare.test_input": "Point prepare.test_input in params.yaml at the test rows' file itself, or fix "
                          "the path, link or permissions",
    "pretrain.init_from": "Point pretrain.init_from in params.yaml at a checkpoint directory (saved with "
                          "save_pretrained) whose files this user can read, or fix the path, link or permissions",
}


def load(params: str | Path = "params.yaml") -> Config:
    """The config (typed and checked, as load_config), once every input path it names is usable."""
    check(params, "--params", "file")
    cfg = load_config(params)
    _every_stage_section(params)
    for key, path, expect in user_paths(cfg):
        check(path, key, expect)
    return cfg


def _every_stage_section(params: str | Path) -> None:
    """dvc.yaml tracks each stage's section, and DVC stops at a section missing from the file (every
    key has a default, so the config itself would not): say so before it does, and how to add it."""
    import yaml

    written = yaml.safe_load(Path(params).read_text()) or {}
    missing = [stage for stage in STAGES if stage not in written]
    if missing:
        example = "; ".join(f"`{s}: {{enabled: false}}`" if s == "distill" else f"`{s}: {{}}`" for s in missing)
        raise UserError(f"{params}: no {', '.join(missing)} section, which dvc.yaml tracks for its stage of the same "
                        f"name (DVC refuses a params file without it). Add it with any of its keys, e.g. {example}; "
                        f"`python -m mlcore.config --defaults` prints every key with its default and help.")


def user_paths(cfg: Config) -> list[tuple[str, str, str]]:
    """(key, path, "file" or "dir") for each input path the config gives, to every command: each
    stage's MLflow run hashes prepare.input, and DVC hashes them all. A checkpoint reference with
    nothing at its path is left out: it is a hub id or a package, or missing, which pretrain's
    own check says in its words."""
    found = [("prepare.input", cfg.prepare.input, _kind(cfg.prepare.input))]
    if cfg.prepare.test_input:
        found.append(("prepare.test_input", cfg.prepare.test_input, _kind(cfg.prepare.test_input)))
    ref = cfg.pretrain.init_from
    if ref and not str(ref).startswith(PACKAGE) and os.path.lexists(Path(ref).expanduser()):
        found.append(("pretrain.init_from", str(Path(ref).expanduser()), "dir"))
    return found


def _kind(path: str) -> str:
    """A data input is a file (a table, an IDX file) or a folder (images: class folders, IDX files)."""
    return "dir" if os.path.isdir(path) else "file"


def check(path: str | Path, key: str, expect: str) -> None:
    """A UserError naming `path` (or what under it is refused) when the OS would refuse it."""
    problem = path_problem(path, expect)
    if problem:
        inside = "" if problem.startswith(f"{Path(path)}: ") else f" It is inside {path}, which {key} names."
        raise UserError(f"{problem}.{inside} {_FIX[key]}, and run again.")
