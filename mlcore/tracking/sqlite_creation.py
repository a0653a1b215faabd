"""A new SQLite tracking store is created whole or not at all.

MLflow makes a new SQLite store's tables by running its schema migrations on the file itself,
and on SQLite they are not one transaction: a kill in that first second leaves a store that no
later run can open ("table _alembic_tmp_experiment_tags already exists"). So a new store is
built under a temporary name beside its path and linked into place complete.
"""
from __future__ import annotations

import os
from pathlib import Path

from mlcore.tracking.store import SQLITE as PREFIX  # the only scheme created here


def create_whole(uri: str) -> bool:
    """Create the SQLite store `uri` names if it does not exist yet; True if this call made it.
    Other URIs (a server, PostgreSQL, an in-memory or parametrised SQLite URI) are left to MLflow."""
    if not uri.startswith(PREFIX) or "?" in uri or uri == PREFIX + ":memory:":
        return False
    path = Path(uri.removeprefix(PREFIX))
    if path.exists():
        return False
    import mlflow.store.db.utils as db

    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    engine = db.create_sqlalchemy_engine_with_retry(PREFIX + str(partial))
    try:
        db._initialize_tables(engine)  # what `mlflow db upgrade` does for an empty database
    finally:
        engine.dispose()  # every connection closed: the file alone is the whole store
    try:
        os.link(partial, path)  # unlike a rename, never replaces a store another process just made
        return True
    except FileExistsError:
        return False
    finally:
        partial.unlink()


def _remove_dead_partials(path: Path) -> None:
    """What a creation killed midway left beside the store (its pid is in the name)."""
    for stale in path.parent.glob(f".{path.name}.*.partial*"):
        pid = stale.name.removeprefix(f".{path.name}.").split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
