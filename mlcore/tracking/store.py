"""The MLflow store: where the pipeline records its runs and registers its model, and where
flows.registry, `make serve-model`, `make ui-mlflow` and batch scoring look. One rule, `resolve_store`:

    1. tracking.mlflow_uri in params.yaml, when set;
    2. else $MLFLOW_TRACKING_URI, when set and not empty;
    3. else sqlite:///mlflow.db in the working directory.

    python -m mlcore.tracking.store [--params params.yaml] [--backend]   # prints the store

Import-light (MLflow is imported only by `holds`), so that config validation can check a store's
scheme without loading MLflow.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from mlcore.config.environment import redact
from mlcore.errors import UserError, entry_point

if TYPE_CHECKING:
    from mlcore.config import Config

KEY, VARIABLE, DEFAULT_FILE = "tracking.mlflow_uri", "MLFLOW_TRACKING_URI", "mlflow.db"
SQLITE = "sqlite:///"
# The schemes MLflow 3's tracking store registry builds a store for
# (mlflow.tracking._tracking_service.utils._tracking_store_registry; tests/test_store.py keeps this
# in step with it). Not the Unity Catalog ones ('databricks-uc', 'uc'): it refuses those for tracking.
# '' is a local path; a database scheme may name its driver (postgresql+psycopg2).
SERVERS = frozenset({"http", "https", "databricks"})
SCHEMES = frozenset({"", "file", "sqlite", "postgresql", "mysql", "mssql"}) | SERVERS
USABLE = ("sqlite:///path/to/mlflow.db, postgresql://, mysql:// or mssql:// (a database), http(s)://host:port "
          "(a tracking server), databricks, or a local directory (file:///path or a plain path)")


def scheme(uri: str) -> str:
    """The store kind MLflow picks for `uri`: its scheme, without a database driver; '' for a path."""
    if uri in ("databricks", "databricks-uc", "uc"):  # MLflow reads these bare names as schemes
        return uri
    found = urlsplit(uri).scheme.lower().split("+", 1)[0]
    return "" if len(found) == 1 else found  # C:\\... is a Windows path, as MLflow reads it


def problem(uri: str) -> str | None:
    """Why MLflow cannot use `uri` as its tracking store, or None when it can."""
    found = scheme(uri)
    if found in SCHEMES or found in _plugin_schemes():
        return None
    return f"MLflow has no tracking store for the scheme {found!r}; use {USABLE}"


def _plugin_schemes() -> set[str]:
    """Schemes that installed MLflow plugins add (entry point group mlflow.tracking_store)."""
    from importlib.metadata import entry_points

    return {e.name for e in entry_points(group="mlflow.tracking_store")}


def resolve_store(source: Config | str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The MLflow store, by the rule above: `source` is the config (its tracking.mlflow_uri) or that
    key's value (None where there is no params file: batch scoring, a bare serving check).
    A store MLflow cannot use is a UserError naming where it came from."""
    value = source if source is None or isinstance(source, str) else source.tracking.mlflow_uri
    environ = os.environ if environ is None else environ
    if value:
        origin = KEY
    elif environ.get(VARIABLE):
        value, origin = environ[VARIABLE], f"${VARIABLE}"
    else:
        return f"{SQLITE}{Path.cwd() / DEFAULT_FILE}"
    why = problem(value)
    if why:
        raise UserError(f"{origin} is {redact(value)!r}: {why}. Fix {origin}, or unset it for "
                        f"{SQLITE}{DEFAULT_FILE} in the working directory.")
    return value


def is_server(store: str) -> bool:
    """A tracking server (its own UI), not a database or directory that `mlflow ui` can open."""
    return scheme(store) in SERVERS


def local_path(store: str) -> Path | None:
    """The file or directory of a SQLite or file store; None for a server or another database."""
    kind = scheme(store)
    if kind == "sqlite":
        return Path(unquote(store.removeprefix(SQLITE)))
    if kind == "file":
        return Path(unquote(urlsplit(store).path))
    return Path(store) if kind == "" else None


def holds(store: str, name: str, version: str, digest: str | None = None) -> bool | None:
    """Whether `store` has version `version` of the registered model `name` (made from `digest`,
    mlcore.tracking.tags.SOURCE_TAG, when given: another store may have its own version 1).
    False for a SQLite file or a directory that does not exist, which is not created by asking;
    None when the store cannot be asked (a server down, a database refusing)."""
    path = local_path(store)
    if path is not None and not path.exists():
        return False
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mlcore.tracking.tags import SOURCE_TAG

    try:
        with _one_quick_try(store):
            found = MlflowClient(tracking_uri=store).get_model_version(name, version)
    except MlflowException as err:
        return False if err.error_code == "RESOURCE_DOES_NOT_EXIST" else None
    except Exception:  # noqa: BLE001 - a driver or network failure: unknown, said so by the caller
        return None
    return digest is None or found.tags.get(SOURCE_TAG) == digest


@contextlib.contextmanager
def _one_quick_try(store: str) -> Iterator[None]:
    """A server that is down answers within seconds, not after MLflow's minutes of retries."""
    if not is_server(store):
        yield
        return
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in quick}
    os.environ.update(quick)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlcore.tracking.store",
        description=f"Print the MLflow store of the pipeline: {KEY} in --params, else ${VARIABLE}, "
                    f"else {SQLITE}{DEFAULT_FILE} in the working directory.")
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--backend", action="store_true",
                        help="for `mlflow ui --backend-store-uri`: a tracking server is an error (it has its own UI)")
    args = parser.parse_args(argv)
    from mlcore.config import load_config

    store = resolve_store(load_config(args.params))
    if args.backend and is_server(store):
        raise UserError(f"The MLflow store ({KEY} or ${VARIABLE}) is the tracking server {redact(store)}: "
                        f"open it in a browser. `make ui-mlflow` starts a UI only over a database or a local "
                        f"directory.")
    print(store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
