"""Search workers on several machines (search.engine prefect): each machine serves the flow
`search-worker` as the deployment search-worker/trials from its own checkout of the project:

    PREFECT_API_URL=http://prefect:4200/api OPTUNA_STORAGE=postgresql+psycopg2://... \
    MLFLOW_TRACKING_URI=http://mlflow:5000 python -m flows.search_worker serve --limit 2

The search stage submits `search.workers` flow runs of it (tasks/_search/remote.py); each claims
and runs trials of the stage's study on the machine whose runner picked it up. docs/search.md,
"Several machines".
"""
from __future__ import annotations

import argparse
import sys

from prefect import flow

from mlcore.errors import entry_point
from tasks._search import remote


@flow(name=remote.FLOW, log_prints=True)
def search_worker(config: dict, study: str, parent_run_id: str | None = None, worker: int = 1) -> int:
    """Claim and run trials of `study` on this machine until the budget is taken; returns how many ran."""
    return remote.run_worker(config, study, parent_run_id, worker)


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.search_worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["serve"], help="serve the deployment until stopped (Ctrl-C, SIGTERM)")
    parser.add_argument("--limit", type=int, default=1,
                        help="flow runs this machine runs at once: one per GPU, or a few on a many-core CPU")
    args = parser.parse_args(argv)
    search_worker.serve(name=remote.DEPLOYMENT, limit=args.limit)
    return 0


if __name__ == "__main__":
    # The flow by its module's name, not as __main__'s: the runner's spawned flow-run process imports it.
    from flows.search_worker import main as search_worker_main

    sys.exit(search_worker_main())
