"""DVC's lock file is the one rule for what is up to date, for `dvc repro` and the Prefect flow alike.

The flow asks DVC whether a stage changed (code, params, deps or outs versus
dvc.lock) before running it, and records the run in dvc.lock afterwards, exactly
as `dvc repro` would. It holds DVC's repository lock for its whole run
(tasks._workspace), so these calls must not take it again.

One thing DVC cannot see is the MLflow registry: `registry_changes` says when the version that
register recorded is not in the store the config points at now (another store, or an emptied
one), and the flow then reruns register against it (`dvc repro` would not: it sees files only).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dvc.lock import LockError, LockNoop
from dvc.repo import Repo

from mlcore import atomic
from mlcore.config import Config
from mlcore.config.environment import redact
from mlcore.tracking.store import holds, resolve_store
from tasks import _paths as P

_held: Repo | None = None  # the Repo whose lock this process holds, while it holds it
LOCKFILE = Path("dvc.lock")
# DVC rewrites dvc.lock in place, so a kill during a commit can leave it empty or cut short.
# A copy taken before each commit (renamed into place, so itself whole) is removed after it;
# finding it means a commit was interrupted, and the copy is the last consistent state.
BEFORE_COMMIT = Path(".dvc/tmp/dvc.lock.before-commit")


def restore_interrupted_commit() -> bool:
    """Put back dvc.lock as it was before an interrupted commit; True if it did. The stage
    whose commit was cut short then shows as changed and reruns: extra work, never a wrong lock."""
    if not BEFORE_COMMIT.exists():
        return False
    if BEFORE_COMMIT.stat().st_size:
        os.replace(BEFORE_COMMIT, LOCKFILE)
    else:  # there was no dvc.lock before that commit
        LOCKFILE.unlink(missing_ok=True)
        BEFORE_COMMIT.unlink()
    print("dvc.lock: restored from before a commit that a killed run interrupted; that stage will rerun")
    return True


def _repo() -> Repo:
    restore_interrupted_commit()
    repo = Repo(".")
    if _held is not None:
        # DVC's lock is a flock: a second descriptor in this same process would be refused.
        repo.lock = LockNoop()
    return repo


def changes(stage: str) -> list:
    """What DVC sees changed for `stage`; empty when it is up to date."""
    with _repo() as repo:
        status = repo.status(targets=[stage])
    return [change for entries in status.values() for change in entries]


def out_of_date() -> list[str]:
    """Every stage (and .dvc file) DVC sees changed, from one status of the whole pipeline."""
    with _repo() as repo:
        return sorted(repo.status())


def registry_changes(cfg: Config) -> list[str]:
    """Why `register` must run although dvc.lock says it is up to date: the version
    reports/registration.json names is not in the MLflow store `cfg` points at. Empty when it is
    there, when nothing is registered yet, or when the store cannot be asked (the summary says so)."""
    try:
        record = json.loads(P.REGISTRATION.read_text())
        name, version = record["model_name"], str(record["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return []  # none yet, or damaged: then DVC sees the out changed
    store = resolve_store(cfg)
    if holds(store, name, version, record.get("source_digest")) is False:
        return [f"{P.REGISTRATION} names {name} version {version}, which the MLflow store {redact(store)} "
                f"does not hold"]
    return []


def commit(stage: str) -> None:
    """Record the stage's deps, params and outs in dvc.lock and cache the outs."""
    with _repo() as repo:
        atomic.write_bytes(BEFORE_COMMIT, LOCKFILE.read_bytes() if LOCKFILE.exists() else b"")  # empty: there was none
        repo.commit(stage, force=True)
        BEFORE_COMMIT.unlink()


def try_hold() -> Repo | str:
    """A Repo holding DVC's repository lock, or, when another DVC command has the workspace,
    who that is. `dvc repro` lets go of the repository lock while a stage's command runs and
    keeps only its per-path locks (.dvc/tmp/rwlock), so those count as held too."""
    repo = Repo(".")
    try:
        repo.lock.lock()  # DVC retries for about 3 s first
    except LockError:
        repo.close()
        return "another DVC command (dvc repro, dvc exp run, dvc add ...), which holds DVC's lock .dvc/tmp/lock"
    busy = _path_lock_holders(Path(repo.tmp_dir) / "rwlock")
    if busy:
        release(repo)
        return f"a DVC command running a stage: {busy}"
    return repo


def _path_lock_holders(rwlock: Path) -> str:
    """The live processes in DVC's per-path lock file, as 'pid 12 (dvc repro)'; '' when none."""
    try:
        entries = json.loads(rwlock.read_text())
    except (OSError, ValueError):
        return ""
    infos = list(entries.get("write", {}).values())
    infos += [info for readers in entries.get("read", {}).values() for info in readers]
    alive = {(info["pid"], info["cmd"]) for info in infos
             if isinstance(info, dict) and info.get("pid") != os.getpid() and _alive(info.get("pid"))}
    return ", ".join(f"pid {pid} ({cmd})" for pid, cmd in sorted(alive))


def _alive(pid) -> bool:
    """DVC leaves a killed command's entries behind and drops them when it next looks."""
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def release(repo: Repo | None) -> None:
    if repo is not None:
        repo.lock.unlock()
        repo.close()


@contextmanager
def holding(repo: Repo | None) -> Iterator[None]:
    """Keep the lock `try_hold` took (if any) until the block ends, then release it."""
    global _held
    _held = repo
    try:
        yield
    finally:
        _held = None
        release(repo)
