"""Serving a registered classifier with `mlflow models serve`: the champion check that
`make serve-model` runs first, and start / wait / stop of a real server in its own process
group (tests/test_serve_model.py and bench/inference.py use them).

    python -m mlcore.tracking.serving NAME   # prints models:/NAME@champion, or says why there is none

The server resolves `@champion` once, at start: after a promotion, restart it.
"""
from __future__ import annotations

import argparse
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
from dataclasses import dataclass
from pathlib import Path

from mlcore.config.environment import redact
from mlcore.errors import UserError, entry_point
from mlcore.tracking.store import local_path, resolve_store, scheme

HOST = "127.0.0.1"  # servers bind to loopback unless told otherwise
ALIAS = "champion"
# The server imports mlflow, torch and transformers and loads the model before /ping answers:
# about 10-20 s on a 2-core CPU, more while other jobs run.
READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0


def champion_uri(name: str, store: str | None = None, alias: str = ALIAS) -> str:
    """models:/NAME@ALIAS if the MLflow store (`store`, else mlcore.tracking.store's rule with no
    params file: $MLFLOW_TRACKING_URI, else ./mlflow.db) has it; else a UserError that says what
    the store holds and how to get a champion. Serve from the same store: `start(tracking_uri=...)`."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    store = store or resolve_store(None)
    fix = ("`make run` trains and registers one (the register stage sets @champion when the model passes its "
           "gate); if it was registered elsewhere, point tracking.mlflow_uri (or $MLFLOW_TRACKING_URI) at that "
           "store.")
    shown = redact(store)
    # Opening a missing SQLite store would create an empty one: say so instead.
    path = local_path(store)
    if scheme(store) == "sqlite" and not path.is_file():
        raise UserError(f"No MLflow store at {shown} (no such file), so no model {name!r} to serve. {fix}")
    client = MlflowClient(tracking_uri=store)
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        raise UserError(f"{shown} has no registered model {name!r} (register.model_name). {fix}") from None
    if alias not in aliases:
        held = ", ".join(f"@{a} -> version {v}" for a, v in aliases.items()) or "no aliases"
        raise UserError(f"Model {name!r} in {shown} has no @{alias} version ({held}). {fix}")
    return f"models:/{name}@{alias}"


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_env(tracking_uri: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # `mlflow models serve` starts `uvicorn` by name: this interpreter's bin (the venv's) must
    # be on PATH even when the venv is not activated.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path

    @property
    def pgid(self) -> int:
        return self.proc.pid  # the leader of its own session (start_new_session)


def start(model_uri: str, log: Path, host: str = HOST, port: int | None = None,
          tracking_uri: str | None = None) -> Server:
    """`mlflow models serve -m MODEL_URI --env-manager local` in a new process group, output to `log`."""
    port = port or free_port(host)
    cli = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    args = [cli, "models", "serve", "-m", model_uri, "--env-manager", "local", "--host", host, "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=server_env(tracking_uri), start_new_session=True)
    return Server(proc, f"http://{host}:{port}", Path(log))


def tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def wait_ready(server: Server, timeout: float = READY_TIMEOUT_S) -> float:
    """Seconds until GET /ping answered 200; RuntimeError (with the log's tail) if the server
    exits first or does not answer within `timeout`."""
    began = time.monotonic()
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited ({server.proc.returncode}) before /ping answered:\n"
                               f"{tail(server.log)}")
        with contextlib.suppress(OSError):  # refused while starting; HTTPError too (503 while loading)
            with urllib.request.urlopen(f"{server.url}/ping", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"mlflow models serve did not answer /ping within {timeout:.0f} s:\n{tail(server.log)}")
        time.sleep(0.25)


def group_alive(pgid: int) -> list[int]:
    """Processes of group `pgid` still running (zombies, which hold nothing, left out)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: only whether the group exists at all
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    alive = []
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]  # after "(command)"
            if int(group) == pgid and state != "Z":
                alive.append(int(stat.parent.name))
    return alive


def stop(server: Server, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM to the whole group (the CLI and the uvicorn it starts), SIGKILL after `grace` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not group_alive(server.pgid):
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pgid, sig)
        deadline = time.monotonic() + wait
        while group_alive(server.pgid) and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(timeout=0.2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=5)


@contextlib.contextmanager
def serving(model_uri: str, log: Path, host: str = HOST, port: int | None = None,
            tracking_uri: str | None = None, timeout: float = READY_TIMEOUT_S) -> Iterator[Server]:
    """A served model, answering /ping, for the block's duration; stopped (whole group) after it."""
    server = start(model_uri, log, host, port, tracking_uri)
    try:
        wait_ready(server, timeout)
        yield server
    finally:
        stop(server)


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


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlcore.tracking.serving",
        description=f"Print models:/NAME@{ALIAS} if the MLflow store has that alias; else say why and exit with "
                    f"status 2 (`make serve-model` runs this before serving).")
    parser.add_argument("name", help="the registered model's name (register.model_name)")
    parser.add_argument("--store", help="the MLflow store (`make serve-model` passes the pipeline's: "
                                        "`python -m mlcore.tracking.store`); default: $MLFLOW_TRACKING_URI, "
                                        "else sqlite:///mlflow.db")
    args = parser.parse_args(argv)
    print(champion_uri(args.name, args.store))
    return 0


if __name__ == "__main__":
    sys.exit(main())
