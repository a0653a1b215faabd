"""DVC's lock file is the one rule for what is up to date, for `dvc repro` and the Prefect flow alike.

The flow asks DVC whether a stage changed (code, params, deps or outs versus
dvc.lock) before running it, and records the run in dvc.lock afterwards, exactly
as `dvc repro` would. It holds DVC's repository lock for its whole run
(tasks._workspace), so these calls must not take it again.

DVC rewrites its small state files in place (open for writing, which empties the file, then
one write when it is closed), so a kill in between leaves one empty or cut short, and every
later DVC command fails on it. `repair_torn_files` puts them right before work.

One thing DVC cannot see is the MLflow registry: `registry_changes` says when the version that
register recorded is not in the store the config points at now (another store, or an emptied
one), and the flow then reruns register against it (`dvc repro` would not: it sees files only).
"""
from __future__ import annotations

import errno
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
from mlcore.errors import UserError, os_reason, path_problem
from mlcore.tracking.store import holds, resolve_store
from tasks import _paths as P

_held: Repo | None = None  # the Repo whose lock this process holds, while it holds it
LOCKFILE = Path("dvc.lock")
# DVC rewrites dvc.lock in place, so a kill during a commit can leave it empty or cut short.
# A copy taken before each commit (renamed into place, so itself whole) is removed after it;
# finding it means a commit was interrupted, and the copy is the last consistent state.
BEFORE_COMMIT = Path(".dvc/tmp/dvc.lock.before-commit")
# DVC's per-path locks (stages' deps and outs; `dvc exp`'s refs): JSON, read and rewritten by
# every DVC command that touches a stage, the flow's status checks and commits included.
RWLOCKS = (Path(".dvc/tmp/rwlock"), Path(".dvc/tmp/exps/rwlock"))
TORN_LOCKFILE = Path(".dvc/tmp/dvc.lock.torn")  # a dvc.lock cut short, kept for a look


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


def repair_torn_files() -> list[str]:
    """Put right what a kill inside one of DVC's in-place writes left half-written; prints and
    returns what it did, in words. Only while this process holds DVC's lock and no
    `dvc repro` runs a stage (tasks._workspace calls it then): under a running `dvc repro`,
    .dvc/tmp/rwlock holds that run's live per-path locks."""
    if _held is None:
        raise RuntimeError("repair_torn_files needs DVC's lock: call it inside workspace_lock(hold_dvc=True)")
    done = [f"{LOCKFILE}: restored from before an interrupted commit"] if restore_interrupted_commit() else []
    for rwlock in RWLOCKS:
        if _torn_rwlock(rwlock):
            # Empty is what DVC starts from; the entries lost were a dead process's (a live
            # one's would be whole: a DVC command that meets a torn file stops before writing).
            rwlock.unlink()
            done.append(f"{rwlock}: cut short by a killed DVC command; emptied")
            print(done[-1])
    problem = _lockfile_problem()
    if problem:
        os.replace(LOCKFILE, TORN_LOCKFILE)
        done.append(f"{LOCKFILE}: {problem}, as a kill during DVC's write of it leaves it; moved to "
                    f"{TORN_LOCKFILE}, so every stage reruns (extra work, never a wrong record)")
        print(done[-1])
    return done


def _torn_rwlock(path: Path) -> bool:
    """True when DVC could not read this per-path lock file (it would raise RWLockFileCorruptedError)."""
    return path.exists() and _read_rwlock(path) is None


def _read_rwlock(path: Path) -> dict | None:
    """A per-path lock file as DVC reads it; None when it is absent, cut short or not DVC's format."""
    from dvc.rwlock import SCHEMA
    from voluptuous import Invalid

    try:
        return SCHEMA(json.loads(path.read_bytes()))
    except (OSError, ValueError, Invalid):  # JSONDecodeError is a ValueError
        return None


def _lockfile_problem() -> str | None:
    """Why dvc.lock cannot be the record DVC wrote whole, in words; None when it can. DVC writes
    it in one go and always ends it with a newline, so an empty file or a missing last newline
    means the write was cut short."""
    try:
        data = LOCKFILE.read_bytes()
    except FileNotFoundError:
        return None
    if any(line.startswith(b"<<<<<<< ") for line in data.splitlines()):
        raise UserError(f"{LOCKFILE}: has merge conflict markers (<<<<<<<). Resolve them, keeping either side "
                        f"(a stage whose record is stale then reruns), and run again.")
    if not data.endswith(b"\n"):
        return "it is empty" if not data else "it ends mid-line"
    from dvc.exceptions import DvcException
    from dvc.fs import localfs
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    from dvc.utils.strictyaml import load

    try:
        load(str(LOCKFILE), COMPILED_LOCKFILE_SCHEMA, localfs)
    except DvcException as err:
        return f"DVC cannot read it ({str(err).splitlines()[0]})"
    return None


@contextmanager
def _repo() -> Iterator[Repo]:
    restore_interrupted_commit()
    repo = Repo(".")
    if _held is not None:
        # DVC's lock is a flock: a second descriptor in this same process would be refused.
        repo.lock = LockNoop()
    try:
        with repo:
            yield repo
    except OSError as err:
        if not _refused(err):
            raise
        name = str(err.filename)
        problem = path_problem(name, "dir" if os.path.isdir(name) else "file") or f"{name}: {os_reason(err)}"
        raise UserError(f"{problem}. DVC met it while checking this workspace, whose files and folders it reads "
                        f"unless .dvcignore names them: fix it, move it out of the project or list it in "
                        f".dvcignore, and run again.") from None


def _refused(err: OSError) -> bool:
    """An OS error on a path in the workspace that the user must fix (the inputs were checked
    before DVC, tasks._inputs; this is for anything else DVC walks into), not a bug."""
    if err.filename is None:
        return False
    broken_link = err.errno == errno.ENOENT and os.path.islink(err.filename)
    return broken_link or err.errno in (errno.ELOOP, errno.EACCES, errno.EPERM, errno.ENOTDIR)


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
    entries = _read_rwlock(rwlock) or {}  # a torn one names no live process: repair_torn_files mends it
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
