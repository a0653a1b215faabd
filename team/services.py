"""The two HTTP servers the team shares, both on the team's PostgreSQL:

- MLflow's tracking server and Model Registry (`mlflow server`) on the database `mlflow`. It
  serves artifacts itself (--serve-artifacts), storing them at Settings.artifact_destination, so
  a client needs the server's URL and no access to the storage;
- Prefect's server (`prefect server start`: the API, the UI and the scheduler) on the database
  `prefect`, with PREFECT_HOME in DIR/prefect.

Each is a command and the environment it adds. The database URLs, which hold the password, go in
the environment, never on the command line, which `ps` shows every user of the machine.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from team import postgres
from team.processes import script
from team.settings import LOOPBACK, Settings

# A server started from a shell that was pointed at the team (eval "$(python -m team env)") must
# not take those client settings for its own.
CLIENT_VARIABLES = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL")


@dataclass(frozen=True)
class Server:
    name: str
    port_setting: str  # the Settings field
    health: str  # the path that answers 200 once the server is ready
    api: str  # what clients append to the server's address
    build: Callable[[Settings], tuple[list[str], dict[str, str]]]  # its command and the variables it adds

    def port(self, settings: Settings) -> int:
        return getattr(settings, self.port_setting)

    def address(self, settings: Settings, host: str | None = None) -> str:
        host = host or settings.advertised_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port(settings)}"

    def command(self, settings: Settings) -> tuple[list[str], dict[str, str]]:
        """The command and its whole environment: this one's, less the client variables, plus its own."""
        args, added = self.build(settings)
        env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
        return args, {**env, **added}


def _mlflow(settings: Settings) -> tuple[list[str], dict[str, str]]:
    args = [script("mlflow"), "server", "--host", settings.host, "--port", str(settings.mlflow_port),
            "--workers", str(settings.mlflow_workers),
            "--serve-artifacts", "--artifacts-destination", settings.artifact_destination]
    env = {"MLFLOW_BACKEND_STORE_URI": postgres.url(settings, "mlflow"), **_mlflow_security(settings)}
    # MLflow 3's job runner starts eight more processes (about 1 GB) for GenAI jobs (scorers, trace
    # rollups) that this pipeline never submits; MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true brings it back.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") or "false"
    return args, env


def _mlflow_security(settings: Settings) -> dict[str, str]:
    """MLflow's guard against DNS rebinding admits a Host header of localhost or a private address
    only, and its CORS guard refuses a browser's writes from any origin but localhost. A server that
    others reach by name must admit that name too. Values set by the user's environment win."""
    if settings.host in LOOPBACK:
        return {}
    from mlflow.server.security_utils import get_default_allowed_hosts

    name = settings.advertised_host
    added = {"MLFLOW_SERVER_ALLOWED_HOSTS": ",".join([*get_default_allowed_hosts(), name, f"{name}:*"]),
             "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS": _MLFLOW.address(settings)}
    return {k: v for k, v in added.items() if not os.environ.get(k)}


def _prefect(settings: Settings) -> tuple[list[str], dict[str, str]]:
    args = [script("prefect"), "server", "start", "--host", settings.host, "--port", str(settings.prefect_port)]
    return args, {
        "PREFECT_HOME": str(settings.dir / "prefect"),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres.url(settings, "prefect", driver="asyncpg"),
        # The UI runs in the browser, on whichever machine: it must call the API by the advertised name.
        "PREFECT_SERVER_UI_API_URL": f"{_PREFECT.address(settings)}{_PREFECT.api}",
        # The machines running this may have no network: no telemetry calls.
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
    }


_MLFLOW = Server("mlflow", "mlflow_port", health="/health", api="", build=_mlflow)
_PREFECT = Server("prefect", "prefect_port", health="/api/health", api="/api", build=_prefect)
SERVERS = (_MLFLOW, _PREFECT)
