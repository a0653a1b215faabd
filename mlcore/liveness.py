"""Is the process that owns a trial or a run still alive?

Optuna's JournalStorage has no heartbeat, so a trial whose process was killed
(kill -9, OOM, a lost machine) would stay RUNNING forever. Each trial and run
records its owner: host, pid, and the pid's start time (so a recycled pid is
not mistaken for the owner). Death is only certain on the same host.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_time(pid: int) -> str | None:
    stat = Path(f"/proc/{pid}/stat")
    try:
        # Field 22 (starttime); the command name in field 2 may hold spaces, so split after ")".
        return stat.read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner(pid: int | None = None) -> dict[str, str]:
    """The record of process `pid` (default: this one), for `is_dead` to judge later."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": str(pid), "start": _start_time(pid) or ""}


def is_dead(record: dict[str, str] | None) -> bool:
    """True only when the owner is certainly gone: same host, and its pid is free or reused."""
    if not record or record.get("host") != socket.gethostname():
        return False
    pid = int(record["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by another user
    started = _start_time(pid)
    return bool(record.get("start")) and started is not None and started != record["start"]
