"""Servers that outlive the command that started them: each in a session of its own (so a
terminal's Ctrl-C or a closing shell does not reach it, and the whole group can be stopped at
once), output to a log file, and a pid record (mlcore.liveness: host, pid, start time) that a
later `down` or `status` judges, so that a recycled pid is never taken for the server.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlcore import atomic, liveness
from mlcore.errors import UserError

BIN = Path(sys.executable).parent  # this interpreter's scripts (mlflow, prefect), activated or not
KILL_WAIT_S = 10.0


def script(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if not found:
        raise UserError(f"`{name}` is not installed in this environment ({BIN}); `make install` installs it.")
    return found


def start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """`args` detached: a new session, stdin from /dev/null, stdout and stderr appended to `log`
    (never this command's own output, which `eval "$(python -m team up)"` reads to its end)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}  # what the server starts by name
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)


def save(path: Path, proc: subprocess.Popen, url: str) -> None:
    atomic.write_json(path, {**liveness.owner(proc.pid), "pgid": proc.pid, "url": url})


def load(path: Path) -> dict | None:
    """The pid record at `path` while its process lives; None (and the stale record removed) once it
    is gone. A UserError for a record of another machine (a state directory on a shared disk): its
    pid means nothing here, and no signal may reach whatever holds that number on this machine."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        record = json.loads(path.read_text())
        if record["host"] != socket.gethostname():
            raise UserError(f"{path} records a server started on {record['host']}, not on this machine "
                            f"({socket.gethostname()}): run `python -m team` there.")
        if not liveness.is_dead(record) or group_pids(int(record["pgid"])):
            return record
        path.unlink(missing_ok=True)
    return None


def group_pids(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (zombies, which hold nothing, left out)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(group) == pgid and state != "Z":
                found.append(int(stat.parent.name))
    return found


def stop_group(pgid: int, grace: float) -> bool:
    """SIGTERM to the whole group (the server and the workers it started), SIGKILL after `grace`
    seconds; True once none of it is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_S)):
        if not group_pids(pgid):
            return True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while group_pids(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
    return not group_pids(pgid)


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on host:port. SO_REUSEADDR, as the servers set it, so
    that the closing connections of a server just stopped do not count."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def answers(url: str) -> bool:
    with contextlib.suppress(OSError):  # refused while starting; HTTPError (an OSError) for 503
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    return False


def tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def wait_until_answers(name: str, proc: subprocess.Popen, url: str, log: Path, timeout: float) -> float:
    """Seconds until GET `url` answered 200; a UserError naming the log if the server exits first or
    does not answer within `timeout` (the server's group is stopped then: nothing is left half up)."""
    began = time.monotonic()
    while not answers(url):
        if proc.poll() is not None:
            problem = f"exited with status {proc.returncode} before {url} answered"
        elif time.monotonic() - began > timeout:
            problem = f"did not answer {url} within {timeout:.0f} s (TEAM_READY_TIMEOUT)"
        else:
            time.sleep(0.3)
            continue
        stop_group(proc.pid, grace=5)
        raise UserError(f"The {name} server {problem}. Its log is {log}; its last lines:\n{tail(log)}")
    return time.monotonic() - began
