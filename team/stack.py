"""The three servers together: `up`, `down`, `status` and the environment that points clients at them.

PostgreSQL starts first (the other two keep their data in it), then MLflow and Prefect start side
by side and `up` waits for each to answer. Progress goes to stderr and the export lines to
stdout, so that `eval "$(python -m team up)"` both starts the servers and points this shell at them.
"""
from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from mlcore import atomic
from mlcore.errors import UserError
from team import postgres, processes
from team.services import SERVERS, Server
from team.settings import Settings, flag_and_variable, recorded

# Prefect finishes its background services on SIGTERM; MLflow's workers close their connections.
STOP_GRACE_S = 20.0
NOT_STARTED = ("No team servers were started in {dir}: `python -m team up` starts them "
               "(--dir or TEAM_DIR names another state directory).")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def environment(settings: Settings) -> dict[str, str]:
    """What points the pipeline at the servers: MLflow and Optuna read these, and Prefect reads PREFECT_API_URL."""
    mlflow, prefect = SERVERS
    return {"MLFLOW_TRACKING_URI": mlflow.address(settings) + mlflow.api,
            "PREFECT_API_URL": prefect.address(settings) + prefect.api,
            "OPTUNA_STORAGE": postgres.url(settings, "optuna", host=settings.advertised_host)}


def export_lines(settings: Settings) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in environment(settings).items())


def _running_servers(settings: Settings) -> dict[str, dict]:
    return {s.name: record for s in SERVERS if (record := processes.load(settings.pid_file(s.name)))}


def _refuse_other_settings(settings: Settings) -> None:
    previous = recorded(settings.dir)
    if previous is None or previous == settings:
        return
    if postgres.running(previous) or _running_servers(previous):
        changed = ", ".join(f"{k} {v!r} (now {settings.to_json()[k]!r})"
                            for k, v in previous.to_json().items() if settings.to_json()[k] != v)
        raise UserError(f"The team servers in {settings.dir} already run with other settings: {changed}. "
                        f"`python -m team down` first, then `up` with the new ones (the data stays).")


def _start_postgres(settings: Settings, running: bool) -> None:
    where = f"{settings.host}:{settings.postgres_port}"
    if running:
        say(f"postgres: already up on {where}")
    else:
        postgres.start(settings)
        say(f"postgres: up on {where} (data in {postgres.data_dir(settings)})")
    if created := postgres.create_databases(settings):
        say(f"postgres: created the databases {', '.join(created)}")


def _refuse_taken_ports(settings: Settings, starting: list[tuple[str, str]]) -> None:
    """Before anything starts: a UserError if a port of a server to start is taken. `starting`
    holds (server, its port's setting)."""
    for name, port_setting in starting:
        port = getattr(settings, port_setting)
        if processes.port_taken(settings.host, port):
            raise UserError(f"Port {port} on {settings.host} is taken by another program, so the {name} server "
                            f"cannot listen there: stop that program, or choose another port with "
                            f"{flag_and_variable(port_setting)}.")


def up(settings: Settings) -> str:
    """Starts whatever of the three is not running; returns the export lines."""
    _refuse_other_settings(settings)
    postgres.require_binaries()
    postgres_running, running = postgres.running(settings), _running_servers(settings)
    missing = [s for s in SERVERS if s.name not in running]
    starting = [] if postgres_running else [("postgres", "postgres_port")]
    _refuse_taken_ports(settings, starting + [(s.name, s.port_setting) for s in missing])
    settings.dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(settings.record, settings.to_json())  # before any start, so that `down` finds them
    commands = {server: server.command(settings) for server in missing}  # a missing script stops it here
    _start_postgres(settings, postgres_running)
    for name, record in running.items():
        say(f"{name}: already up at {record['url']} (pid {record['pid']})")
    started = []
    for server, (args, env) in commands.items():
        proc = processes.start(args, settings.log(server.name), env)
        processes.save(settings.pid_file(server.name), proc, server.address(settings))
        started.append((server, proc))
    for server, proc in started:
        try:
            seconds = processes.wait_until_answers(server.name, proc, server.address(settings, settings.local_host)
                                                   + server.health, settings.log(server.name), settings.ready_timeout)
        except UserError as err:
            settings.pid_file(server.name).unlink(missing_ok=True)
            raise UserError(f"{err}\nWhat did start keeps running; `python -m team down` stops it.") from None
        say(f"{server.name}: up at {server.address(settings)} in {seconds:.0f} s (log {settings.log(server.name)})")
    return export_lines(settings)


def down(state_dir: Path, purge: bool = False) -> None:
    """Stops the three (the HTTP servers first: they are PostgreSQL's clients); the data stays
    unless `purge`, which deletes the state directory."""
    settings = recorded(state_dir)
    if settings is None:
        say(NOT_STARTED.format(dir=state_dir) + " Nothing to stop" + (" or delete." if purge else "."))
        return
    for server in reversed(SERVERS):
        record = processes.load(settings.pid_file(server.name))
        if record is None:
            continue
        if not processes.stop_group(int(record["pgid"]), STOP_GRACE_S):
            raise UserError(f"The {server.name} server (process group {record['pgid']}) survived SIGKILL.")
        settings.pid_file(server.name).unlink(missing_ok=True)
        say(f"{server.name}: stopped")
    if postgres.running(settings):
        postgres.stop(settings)
        say("postgres: stopped")
    if purge:
        shutil.rmtree(settings.dir)
        outside = "" if Path(settings.artifact_destination).is_relative_to(settings.dir) else \
            f"; the artifacts at {settings.artifact_destination} are not touched"
        say(f"deleted {settings.dir}: the databases, the logs{outside}")
    else:
        say(f"the data stays in {settings.dir} for the next `up` (`down --purge` deletes it)")


def _state(settings: Settings, server: Server) -> tuple[str, str | None]:
    record = processes.load(settings.pid_file(server.name))
    if record is None:
        return "down", None
    answering = processes.answers(server.address(settings, settings.local_host) + server.health)
    return ("up" if answering else "not answering"), record["pid"]


def status(state_dir: Path) -> int:
    """One line a server: up or down, where, its pid and log. 0 when all three are up, else 3."""
    settings = recorded(state_dir)
    if settings is None:
        print(NOT_STARTED.format(dir=state_dir))
        return 3
    pid = postgres.server_pid(settings) if postgres.running(settings) else None
    rows = [("postgres", "up" if pid else "down", f"{settings.host}:{settings.postgres_port}", pid,
             postgres.log(settings))]
    for server in SERVERS:
        state, server_pid = _state(settings, server)
        rows.append((server.name, state, server.address(settings), server_pid, settings.log(server.name)))
    for name, state, where, pid, log in rows:
        print(f"{name:<9} {state:<14} {where:<28} pid {pid or '-':<8} log {log}")
    print(f"state in {settings.dir}; artifacts in {settings.artifact_destination}")
    return 0 if all(row[1] == "up" for row in rows) else 3
