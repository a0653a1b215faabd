"""Two search workers on a real PostgreSQL server (Debian's postgresql package, started here
on loopback): the finished trials equal the budget, with no duplicate and none lost."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from team.postgres import find_server_binaries
from tests.servers import free_port

INITDB, PG_CTL = find_server_binaries() or (None, None)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    INITDB is None or PG_CTL is None,
    reason="PostgreSQL server binaries not installed (apt-get install postgresql; .ci/run does it)",
)]


def _as_postgres(cmd):
    # The server refuses to run as root; the Debian package creates the postgres user.
    return (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + cmd


@pytest.fixture
def postgres_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("pg")
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        root.chmod(0o755)
        for parent in root.parents:  # the postgres user must be able to reach its directory
            if str(parent).startswith("/tmp/"):
                parent.chmod(parent.stat().st_mode | 0o005)
    subprocess.run(_as_postgres([INITDB, "-D", str(data), "-A", "trust", "-U", "postgres"]), check=True,
                   capture_output=True)
    port = free_port()
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    subprocess.run(_as_postgres([PG_CTL, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"]),
                   check=True, capture_output=True)
    try:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE optuna"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(_as_postgres([PG_CTL, "-D", str(data), "-m", "fast", "stop"]), capture_output=True)


def test_two_workers_on_postgresql_finish_the_budget_exactly(tiny_project, postgres_url):
    from tasks import _paths as P
    from tests.conftest import assert_two_workers_filled_the_budget, run_two_worker_search

    study = run_two_worker_search(storage=postgres_url)
    assert_two_workers_filled_the_budget(study)
    assert not list(Path(P.OPTUNA_DIR).glob("*.journal"))  # nothing went to the file storage
