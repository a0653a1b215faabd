"""Scheduled retraining: serve the training pipeline as a Prefect deployment on a cron schedule.

    python -m flows.deploy                      # nightly at 02:00 UTC
    python -m flows.deploy --cron "0 */6 * * *" # every six hours
    python -m flows.deploy --timeout 7200 --retries 1 --retry-delay 60

Point PREFECT_API_URL at a running server (`prefect server start`): its scheduler
creates the runs, and this process stays up and runs each one in the current
directory (the project root). Every deployment served here runs one at a time
(a run that would overlap a running one is cancelled), retries only transient
failures (a lost MLflow or database connection), and fails after a timeout.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from typing import Any

from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.exceptions import TerminationSignal

from flows.training_flow import training_pipeline
from mlcore.errors import entry_point

NIGHTLY = "0 2 * * *"
DEPLOYMENT_NAME = "nightly-retraining"

# The default run takes minutes; a nightly run still going after 4 h is stuck, and the
# timeout ends it before the working day (and long before the next night's run).
TIMEOUT_S = 4 * 3600
# Transient failures only (flows._hooks.is_transient): a tracking server or
# database that restarts is usually back within minutes. User errors and timeouts fail at once.
RETRIES = 2
RETRY_DELAY_S = 300

# One run of a deployment at a time. CANCEL_NEW rather than ENQUEUE: a run that would overlap a
# running one (the previous night's run still going, or a manual trigger during a run) is
# cancelled at once and shows as Cancelled, "Deployment concurrency limit reached.". Queuing it
# would start a second retraining on the same data as soon as the first ends, in working hours,
# and a pipeline slower than its schedule would pile runs up; the next night's run picks up
# whatever changed in between.
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


@dataclass(frozen=True)
class Scheduled:
    """A flow served on a cron schedule, with the policy every deployment here shares."""

    flow: Flow
    name: str
    cron: str
    parameters: dict[str, Any]
    description: str
    tags: list[str] = field(default_factory=list)
    timeout: int = TIMEOUT_S
    retries: int = RETRIES
    retry_delay: int = RETRY_DELAY_S

    def served_flow(self) -> Flow:
        # Retries and the timeout are options of the flow, not of a deployment.
        return self.flow.with_options(timeout_seconds=self.timeout, retries=self.retries,
                                      retry_delay_seconds=self.retry_delay)

    def deployment_options(self) -> dict[str, Any]:
        return dict(name=self.name, cron=self.cron, parameters=self.parameters, description=self.description,
                    tags=self.tags, concurrency_limit=ONE_AT_A_TIME)

    def to_deployment(self):
        """The RunnerDeployment that serve_all registers (for inspection and tests)."""
        return self.served_flow().to_deployment(**self.deployment_options())


def nightly_retraining(cron: str = NIGHTLY, name: str = DEPLOYMENT_NAME, params: str = "params.yaml",
                       timeout: int = TIMEOUT_S, retries: int = RETRIES, retry_delay: int = RETRY_DELAY_S) -> Scheduled:
    return Scheduled(
        training_pipeline,
        name=name,
        cron=cron,
        parameters={"params": params, "force": False},
        description="Retrain on the current data; dvc.lock decides which stages rerun.",
        tags=["retraining"],
        timeout=timeout,
        retries=retries,
        retry_delay=retry_delay,
    )


# Batch scoring has its own deployment, served by its own command with the same policy:
# `python -m flows.batch_predict ... --cron SCHEDULE` passes flows.batch_predict.scheduled(), a
# Scheduled(batch_scoring, name="scheduled-scoring", ...), to serve_all(). Its parameters (model,
# input, output) are given there, which is why it is not served here next to nightly_retraining.


def build_deployment(cron: str = NIGHTLY, name: str = DEPLOYMENT_NAME, params: str = "params.yaml", **policy):
    """The nightly retraining deployment ("training-pipeline/nightly-retraining")."""
    return nightly_retraining(cron, name, params, **policy).to_deployment()


def serve_all(*scheduled: Scheduled) -> None:
    """Register the deployments and run their scheduled runs until interrupted.

    Not `prefect.serve(deployment)`: that runs each flow run from the deployment's entrypoint,
    that is the `@flow` as written, which would drop the timeout and retries set here.
    `Runner.add_flow` runs the flow object itself (options included) in a subprocess.
    """
    from prefect.runner import Runner

    runner = Runner(pause_on_shutdown=True)  # stopping this process pauses the schedules
    for item in scheduled:
        runner.add_flow(item.served_flow(), **item.deployment_options())
        print(f"serving {item.flow.name}/{item.name} on cron {item.cron!r} (UTC), timeout {item.timeout} s, "
              f"{item.retries} retries on transient failures; runs: `prefect flow-run ls`", flush=True)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal):
        print("stopped serving; the schedules are paused", flush=True)


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cron", default=NIGHTLY, help=f"cron schedule, UTC (default: {NIGHTLY!r}, nightly)")
    parser.add_argument("--name", default=DEPLOYMENT_NAME, help=f"deployment name (default: {DEPLOYMENT_NAME})")
    parser.add_argument("--params", default="params.yaml", help="params file of the runs (default: params.yaml)")
    parser.add_argument("--timeout", type=int, default=TIMEOUT_S, metavar="SECONDS",
                        help=f"fail a run that takes longer, without retrying it (default: {TIMEOUT_S}, 4 h)")
    parser.add_argument("--retries", type=int, default=RETRIES,
                        help=f"retries after a transient failure, never after a user error (default: {RETRIES})")
    parser.add_argument("--retry-delay", type=int, default=RETRY_DELAY_S, metavar="SECONDS",
                        help=f"wait before a retry (default: {RETRY_DELAY_S})")
    args = parser.parse_args(argv)
    if args.timeout <= 0 or args.retries < 0 or args.retry_delay < 0:
        parser.error("--timeout must be positive, --retries and --retry-delay non-negative")
    serve_all(nightly_retraining(args.cron, args.name, args.params, args.timeout, args.retries, args.retry_delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
