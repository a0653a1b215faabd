"""The team servers' settings: each default, its variable and its help, here once.

A value comes from its flag (`--mlflow-port 5055`), else its variable (TEAM_MLFLOW_PORT),
else the default below. `up` records what it used in DIR/settings.json; `down`, `status` and
`env` read that record, so they need no more than the state directory.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlcore.errors import UserError

# Addresses that mean "every interface": a client cannot connect to them, so URLs name the machine.
WILDCARDS = frozenset({"0.0.0.0", "::", "*"})
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _setting(default, variable: str, help: str):
    return field(default=default, metadata={"variable": variable, "help": help})


@dataclass(frozen=True)
class Settings:
    dir: Path = _setting(Path(".team"), "TEAM_DIR",
                         "where the servers keep their data, logs and pids; a relative path starts at the working "
                         "directory")
    host: str = _setting("127.0.0.1", "TEAM_HOST",
                         "the address all three listen on: this machine only, unless told; 0.0.0.0 listens on "
                         "every interface (docs/team.md says what else a second machine needs)")
    public_host: str = _setting("", "TEAM_PUBLIC_HOST",
                                "the name clients reach the servers by, in the printed URLs; when empty, HOST, or this "
                                "machine's name when HOST is 0.0.0.0")
    postgres_port: int = _setting(5433, "TEAM_POSTGRES_PORT",
                                  "PostgreSQL's port (not 5432, which Debian's own cluster takes)")
    mlflow_port: int = _setting(5000, "TEAM_MLFLOW_PORT", "the MLflow tracking server's port")
    prefect_port: int = _setting(4200, "TEAM_PREFECT_PORT", "the Prefect server's port")
    artifacts: str = _setting("", "TEAM_ARTIFACTS",
                              "where MLflow stores run artifacts: a directory or an object-store URI such as "
                              "s3://bucket/mlflow, which clients reach through the MLflow server; when empty, "
                              "DIR/mlflow-artifacts")
    # MLflow's own default is 4 workers, each a whole Python process: more than a small team needs.
    mlflow_workers: int = _setting(2, "TEAM_MLFLOW_WORKERS", "the MLflow server's worker processes")
    ready_timeout: float = _setting(180.0, "TEAM_READY_TIMEOUT",
                                    "seconds each server may take to answer before `up` gives up")

    @property
    def local_host(self) -> str:
        """Where this machine's own clients (this CLI, the servers' database connections) connect."""
        return "127.0.0.1" if self.host in WILDCARDS else self.host

    @property
    def advertised_host(self) -> str:
        """The host in the printed URLs: the one the other machines of the team connect to."""
        return self.public_host or (socket.getfqdn() if self.host in WILDCARDS else self.host)

    @property
    def artifact_destination(self) -> str:
        return self.artifacts or str(self.dir / "mlflow-artifacts")

    @property
    def record(self) -> Path:
        return self.dir / "settings.json"

    def log(self, server: str) -> Path:
        return self.dir / "logs" / f"{server}.log"

    def pid_file(self, server: str) -> Path:
        return self.dir / f"{server}.pid.json"

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "dir": str(self.dir)}





def flag_and_variable(name: str) -> str:
    """How a user sets the setting `name`: '--postgres-port (TEAM_POSTGRES_PORT)'."""
    variable = next(f.metadata["variable"] for f in dataclasses.fields(Settings) if f.name == name)
    return f"--{name.replace('_', '-')} ({variable})"


def add_flags(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """A flag per named setting; its default is None, so that `resolve` can tell it was not given."""
    for f in dataclasses.fields(Settings):
        if f.name in names:
            kind = type(f.default)
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None, metavar=f.name.upper(),
                                help=f"{f.metadata['help']} (default: {f.default or 'empty'}; "
                                     f"${f.metadata['variable']})")


def resolve(flags: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Each setting from its flag, else its variable (an empty one counts as unset), else its default."""
    values = {}
    for f in dataclasses.fields(Settings):
        given, variable = getattr(flags, f.name, None), f.metadata["variable"]
        if given is None and environ.get(variable):
            try:
                given = type(f.default)(environ[variable])
            except ValueError:
                raise UserError(f"${variable} is {environ[variable]!r}, not a {type(f.default).__name__}: "
                                f"{f.metadata['help']}.") from None
        values[f.name] = f.default if given is None else given
    values["dir"] = Path(values["dir"]).expanduser().resolve()
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    for name in ("postgres_port", "mlflow_port", "prefect_port"):
        if not 0 < getattr(settings, name) < 65536:
            raise UserError(f"{name.replace('_', ' ')} {getattr(settings, name)} is not a port (1-65535).")
    ports = [settings.postgres_port, settings.mlflow_port, settings.prefect_port]
    if len(set(ports)) < 3:
        raise UserError(f"The three servers need three different ports, not {ports} (PostgreSQL, MLflow, Prefect).")
    if settings.mlflow_workers < 1 or settings.ready_timeout <= 0:
        raise UserError("mlflow workers must be at least 1 and the ready timeout more than 0 seconds.")


def recorded(state_dir: Path) -> Settings | None:
    """The settings of the last `up` in `state_dir`, or None when nothing was started there."""
    path = state_dir / "settings.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return Settings(**{**data, "dir": Path(data["dir"])})
    except (ValueError, TypeError, KeyError) as err:
        raise UserError(f"{path} is damaged ({err}); `python -m team up` writes it again.") from None
