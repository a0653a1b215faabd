"""One run per workspace. The flow and every stage CLI hold an exclusive lock on the project
while they work; a second run is told who holds it and exits, or queues behind it with --wait.

    python -m tasks._workspace     # who holds the workspace now (exit 1 when it is busy); when it
                                   # is free, also repairs what a killed run left half-written

The lock is a kernel file lock (flock) on .pipeline.lock: a killed holder, even by kill -9,
releases it at once, so there is never a stale lock to clear by hand. The file also says who
holds it (pid, host, start time, command), for the message a refused run prints.
"""
from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlcore.errors import UserError, entry_point

LOCK_FILE = Path(".pipeline.lock")  # relative to the project root, which every entry point runs in
WAIT_POLL_S = 2.0
_depth = 0  # how many nested workspace_lock blocks this process is in (the flow's CLI and its body)


class WorkspaceBusy(UserError):
    """Another run holds the workspace. Not the user's mistake to fix, but not a bug either:
    a later attempt may find it free, so a scheduled run retries it (flows._hooks.is_transient)."""

    transient = True


def holder(path: Path = LOCK_FILE) -> str | None:
    """Who holds the workspace lock, in words, or None when it is free."""
    if not path.exists():
        return None
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            return _describe(handle.read())
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        return (f"{info['what']}, pid {info['pid']} on {info['host']}, started {info['started']}, "
                f"command: {info['command']}")
    except (ValueError, KeyError, TypeError):  # the holder has not written its record yet
        return "another run (its record is not written yet)"


def _record(what: str) -> str:
    return json.dumps({
        "what": what, "pid": os.getpid(), "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    })


def _try_flock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _busy(path: Path, who: str) -> WorkspaceBusy:
    return WorkspaceBusy(
        f"this workspace ({Path.cwd()}) is in use by {who}. Nothing was changed. Wait for that run to "
        f"end, or pass --wait to start when it does. ({path} records the holder; the lock goes with "
        f"its process, so it is never stale.)")


@contextmanager
def workspace_lock(what: str, *, wait: bool = False, hold_dvc: bool = False,
                   path: Path = LOCK_FILE) -> Iterator[None]:
    """Hold the workspace for `what` (e.g. "the training-pipeline flow").

    hold_dvc also holds DVC's repository lock for the whole time: `dvc repro` deletes a stage's
    outputs before it runs the stage, so one started beside the flow would delete what the flow
    is writing. DVC's lock is taken first and ours second, as under `dvc repro` (which holds
    DVC's lock while its stages take ours), so a waiting run never holds ours while it waits for
    DVC's, which would refuse the next stage of a running `dvc repro`. With both held, it first
    repairs DVC's files that a killed command left half-written (tasks._dvc_state)."""
    global _depth
    if _depth:  # this process holds it already: the CLI took it before starting Prefect
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    from tasks import _dvc_state

    hold_dvc = hold_dvc and Path(".dvc").is_dir()
    announced = False
    while True:
        dvc_lock = _dvc_state.try_hold() if hold_dvc else None
        dvc_busy = dvc_lock if isinstance(dvc_lock, str) else None
        fd = None if dvc_busy else _try_flock(path)
        if fd is not None:
            break
        _dvc_state.release(None if dvc_busy else dvc_lock)
        who = holder(path) or dvc_busy or "another run"
        if not wait:
            raise _busy(path, who)
        if not announced:
            print(f"waiting for the workspace: it is in use by {who}", file=sys.stderr, flush=True)
            announced = True
        time.sleep(WAIT_POLL_S)
    with _dvc_state.holding(dvc_lock):
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _record(what).encode(), 0)
            _depth = 1
            if dvc_lock is not None:
                # Holding both locks, with no live process in DVC's per-path locks, no DVC
                # command runs in this workspace: the one time to mend what a kill left torn.
                _dvc_state.repair_torn_files()
            yield
        finally:
            _depth = 0
            os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the flock


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks._workspace", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    try:
        # Taken for a moment, as a run would take it: that also repairs what a killed run left
        # torn, so that `make data`'s `dvc add` and a `dvc repro` after this do not fail on it.
        with workspace_lock("a check of the workspace (python -m tasks._workspace)", hold_dvc=True):
            pass
    except WorkspaceBusy as busy:
        print(f"error: {busy}", file=sys.stderr)
        return 1
    print("the workspace is free")
    return 0


if __name__ == "__main__":
    sys.exit(main())
