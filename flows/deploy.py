"""Scheduled retraining: serve the training pipeline as a Prefect deployment on a cron schedule.

    python -m flows.deploy                      # nightly at 02:00
    python -m flows.deploy --cron "0 */6 * * *" # every six hours

Point PREFECT_API_URL at a running server (`prefect server start`) so the
schedule and its runs outlive this process's terminal; the process stays up and
runs each scheduled flow run in the project directory.
"""
from __future__ import annotations

import argparse
import sys

from prefect import serve

from flows.training_pipeline import training_pipeline

NIGHTLY = "0 2 * * *"
DEPLOYMENT_NAME = "nightly-retraining"


def build_deployment(cron: str = NIGHTLY, name: str = DEPLOYMENT_NAME, params: str = "params.yaml"):
    return training_pipeline.to_deployment(
        name=name,
        cron=cron,
        parameters={"params": params, "force": False},
        description="Retrain on the current data; dvc.lock decides which stages rerun.",
        tags=["retraining"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cron", default=NIGHTLY, help=f"cron schedule (default: {NIGHTLY!r}, nightly)")
    parser.add_argument("--name", default=DEPLOYMENT_NAME)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    serve(build_deployment(args.cron, args.name, args.params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
