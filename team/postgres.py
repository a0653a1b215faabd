"""The team's PostgreSQL server: Debian's server programs (initdb, pg_ctl), one cluster under
DIR/postgres/data, and a database per client: mlflow, optuna and prefect.

The server refuses to run as root, so under root every server command runs as the `postgres`
user (which Debian's package creates) through `runuser`, and DIR/postgres belongs to that user.
Every connection, local ones too, needs the password (scram-sha-256): `up` makes one on the first
start, in DIR/postgres.password, readable by its owner only. pg_hba.conf admits any address with
the password, but the server listens on HOST alone (listen_addresses), loopback unless told.
"""
from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path

from mlcore.errors import UserError
from team.processes import tail
from team.settings import Settings

DATABASES = ("mlflow", "optuna", "prefect")
SUPERUSER = "postgres"
INSTALL = "apt-get install postgresql (Debian, Ubuntu), or put the folder holding initdb and pg_ctl on PATH"
# Written once, after initdb; later edits (a narrower address range) are kept.
OTHER_MACHINES = """
# Added by `python -m team up`: other machines, with the password, once listen_addresses (TEAM_HOST)
# is more than loopback. Narrow `all` (the address column) to your network, e.g. 10.1.0.0/16.
host    all             all             all                     scram-sha-256
"""
REACH = ("make every folder above it searchable (chmod o+x), or put the team's state elsewhere with TEAM_DIR "
         "(--dir)")


def find_server_binaries() -> tuple[str, str] | None:
    """(initdb, pg_ctl): from PATH, else from Debian's /usr/lib/postgresql/<version>/bin of the
    highest version that has both; None when they are not installed."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl

    def version(bin_dir: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", bin_dir.parent.name))

    dirs = [d for d in Path("/usr/lib/postgresql").glob("*/bin")
            if (d / "initdb").is_file() and (d / "pg_ctl").is_file()]
    if not dirs:
        return None
    best = max(dirs, key=version)
    return str(best / "initdb"), str(best / "pg_ctl")


def require_binaries() -> tuple[str, str]:
    found = find_server_binaries()
    if found is None:
        raise UserError(f"PostgreSQL's server programs (initdb, pg_ctl) are not installed here: {INSTALL}.")
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    return (["runuser", "-u", SUPERUSER, "--"] if os.geteuid() == 0 else []) + cmd


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(_as_postgres(cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def root(settings: Settings) -> Path:
    return settings.dir / "postgres"


def data_dir(settings: Settings) -> Path:
    return root(settings) / "data"


def log(settings: Settings) -> Path:
    return root(settings) / "server.log"  # written by the postgres user, so in its folder


def password(settings: Settings) -> str:
    path = settings.dir / "postgres.password"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24))  # letters, digits, - and _: nothing to quote in a URL
    return path.read_text().strip()


def url(settings: Settings, database: str, driver: str | None = "psycopg2", host: str | None = None) -> str:
    """A SQLAlchemy URL (libpq's when `driver` is None) of `database`, from `host` (default: this machine)."""
    host = host or settings.local_host
    host = f"[{host}]" if ":" in host else host
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{SUPERUSER}:{password(settings)}@{host}:{settings.postgres_port}/{database}"


def running(settings: Settings) -> bool:
    """Whether the cluster's server runs; a UserError when pg_ctl cannot tell (it cannot read the
    cluster), so that `down --purge` never deletes the data of a server it could not stop."""
    if find_server_binaries() is None or not (data_dir(settings) / "PG_VERSION").is_file():
        return False
    done = _run([require_binaries()[1], "status", "-D", str(data_dir(settings))])
    if done.returncode not in (0, 3):  # 3: not running; 4: the data directory cannot be read
        raise UserError(f"pg_ctl cannot tell whether PostgreSQL runs in {data_dir(settings)}: "
                        f"{done.stderr.strip() or done.stdout.strip()}. The {SUPERUSER} user must reach it: {REACH}.")
    return done.returncode == 0


def server_pid(settings: Settings) -> int | None:
    """The postmaster's pid (also its process group: pg_ctl starts it in a session of its own)."""
    try:
        return int((data_dir(settings) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _own_folder(settings: Settings) -> None:
    """DIR/postgres, owned by the user the server runs as, who must reach it."""
    folder = root(settings)
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return
    try:
        shutil.chown(folder, SUPERUSER)
    except LookupError:
        raise UserError(f"There is no `{SUPERUSER}` user to run PostgreSQL as (it refuses to run as root): "
                        f"{INSTALL}, which creates it.") from None
    folder.chmod(0o700)
    settings.dir.chmod(settings.dir.stat().st_mode | 0o001)  # searchable, not listable, by the postgres user
    if _run(["test", "-w", str(folder)]).returncode != 0:
        raise UserError(f"The {SUPERUSER} user cannot reach {folder}: {REACH}.")


def _initialise(settings: Settings) -> None:
    """A new cluster whose superuser has the password, when DIR/postgres/data holds none yet."""
    data = data_dir(settings)
    if (data / "PG_VERSION").is_file():
        return
    shutil.rmtree(data, ignore_errors=True)  # a cluster whose initdb was cut short
    secret = root(settings) / ".initdb-password"
    secret.write_text(password(settings) + "\n")
    secret.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(secret, SUPERUSER)
    try:
        done = _run([require_binaries()[0], "-D", str(data), "-U", SUPERUSER, "-A", "scram-sha-256",
                     f"--pwfile={secret}", "-E", "UTF8", "--locale=C"])
    finally:
        secret.unlink(missing_ok=True)
    if done.returncode != 0:
        raise UserError(f"initdb could not create the PostgreSQL cluster in {data}:\n{done.stderr.strip()}")
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write(OTHER_MACHINES)


def start(settings: Settings) -> None:
    """The server on HOST:PORT, ready for connections. The socket file
    goes in DIR/postgres (Debian's /var/run/postgresql is for its own clusters)."""
    _own_folder(settings)
    _initialise(settings)
    options = (f"-p {settings.postgres_port} -k {shlex.quote(str(root(settings)))} "
               f"-c listen_addresses={shlex.quote(settings.host)}")
    done = _run([require_binaries()[1], "-D", str(data_dir(settings)), "-l", str(log(settings)), "-o", options,
                 "-w", "-t", str(int(settings.ready_timeout)), "start"], timeout=settings.ready_timeout + 30)
    if done.returncode != 0:
        raise UserError(f"PostgreSQL did not start ({done.stderr.strip() or done.stdout.strip()}). Its log is "
                        f"{log(settings)}; its last lines:\n{tail(log(settings))}")


def create_databases(settings: Settings) -> list[str]:
    """The databases of DATABASES that were missing, now created."""
    import psycopg2

    try:
        connection = psycopg2.connect(url(settings, "postgres", driver=None), connect_timeout=10)
    except psycopg2.OperationalError as err:
        raise UserError(f"PostgreSQL at {settings.local_host}:{settings.postgres_port} refused a connection: "
                        f"{str(err).strip()}. Its log is {log(settings)}.") from None
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database")
            present = {row[0] for row in cursor.fetchall()}
            missing = [name for name in DATABASES if name not in present]
            for name in missing:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return missing


def stop(settings: Settings) -> None:
    """A fast shutdown (open sessions are rolled back), else an immediate one."""
    if not running(settings):
        return
    pg_ctl, data = require_binaries()[1], str(data_dir(settings))
    for mode in ("fast", "immediate"):
        done = _run([pg_ctl, "stop", "-D", data, "-m", mode, "-w", "-t", "60"], timeout=90)
        if done.returncode == 0:
            return
    raise UserError(f"PostgreSQL in {data} did not stop ({done.stderr.strip() or done.stdout.strip()}); "
                    f"its log is {log(settings)}.")
