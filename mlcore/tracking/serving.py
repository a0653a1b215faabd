"""Serving the registered classifier's champion over HTTP with `mlflow models serve` (`make serve-model`).

    python -m mlcore.tracking.serving [NAME] [--params params.yaml] [--host 127.0.0.1] [--port 5001]
    python -m mlcore.tracking.serving --check   # prints models:/NAME@champion, or says why there is none

NAME is register.model_name in --params unless given. The store is the pipeline's
(mlcore/tracking/store.py: tracking.mlflow_uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).
With no store, no such model or no @champion it says why and how to fix it (exit status 2);
otherwise it becomes `mlflow models serve -m models:/NAME@champion --env-manager local` on
HOST:PORT (loopback unless told), from that store. The server resolves `@champion` once, at
start: after a promotion, restart it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from mlcore.config.environment import redact
from mlcore.errors import UserError, entry_point
from mlcore.tracking.store import VARIABLE, local_path, resolve_store, scheme

HOST = "127.0.0.1"  # servers bind to loopback unless told otherwise
PORT = 5001  # beside `make ui-mlflow`'s 5000
ALIAS = "champion"


def champion_uri(name: str, store: str | None = None, alias: str = ALIAS) -> str:
    """models:/NAME@ALIAS if the MLflow store (`store`, else mlcore.tracking.store's rule with no
    params file: $MLFLOW_TRACKING_URI, else ./mlflow.db) has it; else a UserError that says what
    the store holds and how to get a champion. Serve from the same store (MLFLOW_TRACKING_URI)."""
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


def serve_command(model_uri: str, host: str = HOST, port: int = PORT, mlflow: str = "mlflow") -> list[str]:
    """The server: the project's own environment (`--env-manager local`: nothing is installed)."""
    return [mlflow, "models", "serve", "-m", model_uri, "--env-manager", "local", "--host", host, "--port", str(port)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlcore.tracking.serving",
        description=f"Serve models:/NAME@{ALIAS} from the pipeline's MLflow store with `mlflow models serve` "
                    f"(POST /invocations, GET /ping); with no such champion, say why and exit with status 2.")
    parser.add_argument("name", nargs="?", help="the registered model (default: register.model_name in --params)")
    parser.add_argument("--params", default="params.yaml",
                        help="the params file: the model's name and the MLflow store (default: params.yaml)")
    parser.add_argument("--host", default=HOST, help=f"the address to listen on (default: {HOST}, this machine "
                                                     f"only; 0.0.0.0 listens on every interface)")
    parser.add_argument("--port", type=int, default=PORT, help=f"the port to listen on (default: {PORT})")
    parser.add_argument("--check", action="store_true",
                        help=f"print models:/NAME@{ALIAS} if the store has it (else say why) and exit without serving")
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from mlcore.config import load_config

    cfg = load_config(args.params)
    store = resolve_store(cfg)
    uri = champion_uri(args.name or cfg.register.model_name, store)
    if args.check:
        print(uri)
        return 0
    # This interpreter's scripts first: `mlflow models serve` also starts `uvicorn` by name.
    scripts = str(Path(sys.executable).parent)
    mlflow = shutil.which("mlflow", path=scripts) or shutil.which("mlflow")
    if mlflow is None:
        raise UserError("The `mlflow` command is not installed in this environment; `make install` installs it.")
    env = {**os.environ, VARIABLE: store, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}
    print(f"serving {uri} from {redact(store)} at http://{args.host}:{args.port}/invocations "
          f"(restart it after a promotion)", flush=True)
    os.execve(mlflow, serve_command(uri, args.host, args.port, mlflow), env)
    return 0  # not reached: the server has replaced this process


if __name__ == "__main__":
    sys.exit(main())
