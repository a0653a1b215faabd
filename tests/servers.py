"""Real servers for tests and benchmarks: a command in its own process group, output to a log
file; ready once an HTTP URL answers 200 (an error with the log's tail if the command exits
first or never answers); stopped as a whole group (SIGTERM, a grace period, then SIGKILL).

    port = free_port()
    with running([cli, "server", "start", "--port", str(port)], log, f"http://{HOST}:{port}",
                 ready="/api/health") as server:
        ...                         # server.url, server.proc, server.pgid, server.log
    assert not group_members(server.pgid)

Used by tests/test_serve_model.py (`python -m mlcore.tracking.serving`, which execs
`mlflow models serve`), tests/test_scheduled_server.py (`prefect server start`,
`python -m flows.deploy`) and bench/inference.py (`mlflow models serve`). No pytest here, so
that a benchmark can import it.
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
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"  # servers bind to loopback unless told otherwise
# `mlflow models serve` imports mlflow, torch and transformers and loads the model before /ping
# answers (10-20 s on a 2-core CPU), `prefect server start` migrates its database first (5-15 s);
# both take longer while other jobs run.
READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 20.0  # `python -m flows.deploy` pauses its schedules on SIGTERM, through the server
KILL_WAIT_S = 10.0
BIN = Path(sys.executable).parent  # this interpreter's (the venv's) scripts: mlflow, prefect, uvicorn


def seed_prefect_home(home: Path) -> Path:
    """`home` (a PREFECT_HOME) with a migrated, empty Prefect database in it, copied from one made
    once per Prefect version: a server's first start on a new database runs all of Prefect's
    migrations (4-6 s of a 2-core CPU), each test with a home of its own paid them again. The copy
    holds only the schema (`prefect server database upgrade`), no flow, deployment or run."""
    import fcntl
    import sqlite3
    import tempfile
    from importlib.metadata import version

    cache = Path(tempfile.gettempdir()) / "mlcore-test-cache"
    cache.mkdir(exist_ok=True)
    template = cache / f"prefect-{version('prefect')}.db"
    with open(cache / f"{template.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process makes it; parallel workers wait, then copy it
        if not template.exists():
            with tempfile.TemporaryDirectory(dir=cache) as fresh:
                env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
                env.update(PREFECT_HOME=fresh, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
                subprocess.run([script("prefect") or "prefect", "server", "database", "upgrade", "-y"],
                               env=env, check=True, capture_output=True, timeout=300)
                with contextlib.closing(sqlite3.connect(Path(fresh) / "prefect.db")) as db:
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the one file
                shutil.copyfile(Path(fresh) / "prefect.db", Path(fresh) / "done.db")
                os.replace(Path(fresh) / "done.db", template)
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "prefect.db").exists():
        shutil.copyfile(template, home / "prefect.db")
    return home


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def script(name: str) -> str | None:
    """The console script `name` of this interpreter's environment, else the one on PATH."""
    return shutil.which(name, path=str(BIN)) or shutil.which(name)


def tail(path: Path, lines: int = 60) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def group_members(pgid: int) -> list[str]:
    """Processes still in process group `pgid` (zombies, which hold nothing, left out), as `ps` lists them."""
    out = subprocess.run(["ps", "-e", "-o", "pgid=,pid=,stat=,args="],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()
            if line.split()[0] == str(pgid) and not line.split()[2].startswith("Z")]


class Server:
    """`args` started in a new session (its own process group), stdout and stderr to `log`.
    `url` is where it answers, when it does (None for a command that serves no HTTP)."""

    def __init__(self, args: list[str], log: Path, url: str | None = None, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None):
        env = dict(os.environ if env is None else env)
        # Scripts started by name (`mlflow models serve` starts `uvicorn`) come from this
        # interpreter's environment, even when it is not activated.
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        self.args, self.log, self.url = list(args), Path(log), url
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=cwd, start_new_session=True)

    @property
    def pgid(self) -> int:
        return self.proc.pid  # the leader of its own session

    def wait_ready(self, url: str, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds until GET `url` answered 200; RuntimeError, with the log's tail, if the command
        exits first or `url` does not answer within `timeout`."""
        began = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args[:3]} exited ({self.proc.returncode}) before {url} answered:\n"
                                   f"{tail(self.log)}")
            with contextlib.suppress(OSError):  # refused while starting; HTTPError too (503 while loading)
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - began
            if time.monotonic() - began > timeout:
                raise RuntimeError(f"{self.args[:3]}: {url} did not answer within {timeout:.0f} s:\n{tail(self.log)}")
            time.sleep(0.25)

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM to the whole group (the command and whatever it started), SIGKILL after `grace` s."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_S)):
            if not group_members(self.pgid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, sig)
            deadline = time.monotonic() + wait
            while group_members(self.pgid) and time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.25)
                if self.proc.returncode is not None:
                    time.sleep(0.1)  # the leader is gone, what it started may not be yet
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


@contextlib.contextmanager
def running(args: list[str], log: Path, url: str, ready: str = "", timeout: float = READY_TIMEOUT_S,
            **kwargs) -> Iterator[Server]:
    """A server answering GET url+ready with 200 for the block's duration; stopped (whole group) after it."""
    server = Server(args, log, url, **kwargs)
    try:
        server.wait_ready(f"{url}{ready}", timeout)
        yield server
    finally:
        server.stop()


def mlflow_model_server(model_uri: str, log: Path, tracking_uri: str, host: str = HOST,
                        port: int | None = None) -> Server:
    """`mlflow models serve` of `model_uri` from the store `tracking_uri`, as `make serve-model` runs it
    (mlcore.tracking.serving.serve_command), not yet ready: `server.wait_ready(f"{server.url}/ping")`."""
    from mlcore.tracking.serving import serve_command

    port = port or free_port(host)
    args = serve_command(model_uri, host, port, script("mlflow") or "mlflow")
    return Server(args, log, f"http://{host}:{port}", env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri})


def invoke(url: str, body: dict | bytes, timeout: float = 60.0) -> tuple[int, object]:
    """POST `body` (a dict sent as JSON, or raw bytes) to URL/invocations: (status, parsed JSON or text)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/invocations", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text
