"""DVC's lock file is the one rule for what is up to date, for `dvc repro` and the Prefect flow alike.

The flow asks DVC whether a stage changed (code, params, deps or outs versus
dvc.lock) before running it, and records the run in dvc.lock afterwards, exactly
as `dvc repro` would.
"""
from __future__ import annotations

from dvc.repo import Repo


def changes(stage: str) -> list:
    """What DVC sees changed for `stage`; empty when it is up to date."""
    with Repo(".") as repo:
        status = repo.status(targets=[stage])
    return [change for entries in status.values() for change in entries]


def commit(stage: str) -> None:
    """Record the stage's deps, params and outs in dvc.lock and cache the outs."""
    with Repo(".") as repo:
        repo.commit(stage, force=True)
