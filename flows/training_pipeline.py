"""The training pipeline flow: prepare -> pretrain -> search -> finetune -> evaluate -> register.

Each stage is a Prefect task that runs only when dvc.lock says it is out of date,
so this flow and `dvc repro` always agree on what needs to run.

    python -m flows.training_pipeline [--params params.yaml] [--force]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import json
import os
import sys
import urllib.request
from pathlib import Path

from prefect import flow

from flows.summary import check_inputs, summary
from mlcore.config import load_config
from mlcore.errors import UserError
from mlcore.tracking.runs import pipeline_run
from tasks import evaluate, finetune, prepare, pretrain, register, search
from tasks._process import exit_on_sigterm

STAGE_TASKS = [prepare.task, pretrain.task, search.task, finetune.task, evaluate.task, register.task]


# ---- Hooks: failure notification and retry-only-on-transient (used by the scheduled deployment) ----

FAILURE_LOG_ENV = "PIPELINE_FAILURE_LOG"          # default: logs/failures.log in the working directory
FAILURE_WEBHOOK_ENV = "PIPELINE_FAILURE_WEBHOOK"  # optional URL; receives one JSON POST per failure
WEBHOOK_TIMEOUT_S = 5


def notify_failure(flow_obj, flow_run, state) -> None:
    """on_failure / on_crashed hook: append one line to the failure log and POST it to the webhook.

    Never raises: a broken notification must not hide the run's own failure.
    """
    record = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "flow": getattr(flow_obj, "name", None),
        "flow_run": getattr(flow_run, "name", None),
        "flow_run_id": str(getattr(flow_run, "id", "")),
        "state": getattr(state, "name", None),
        "message": " ".join(str(getattr(state, "message", "") or "").split()),
    }
    try:
        path = Path(os.environ.get(FAILURE_LOG_ENV) or "logs/failures.log")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as log:
            log.write(f"{record['time']} {record['flow']} run={record['flow_run']} id={record['flow_run_id']} "
                      f"state={record['state']} message={record['message']}\n")
    except Exception as err:  # noqa: BLE001 - a notification must never raise
        print(f"warning: could not write the failure log: {err}", file=sys.stderr)
    url = os.environ.get(FAILURE_WEBHOOK_ENV)
    if url:
        try:
            request = urllib.request.Request(url, data=json.dumps(record).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
                response.read()
        except Exception as err:  # noqa: BLE001
            print(f"warning: failure webhook {url} not reached: {err}", file=sys.stderr)


def _chain(exc: BaseException):
    """The exception and its causes/contexts (MLflow raises its REST errors inside an except block)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_transient(exc: BaseException) -> bool:
    """True for a failure that a later attempt may not meet: a refused, dropped or timed-out
    connection to MLflow or a database. False for user errors, the flow's own timeout and bugs."""
    import requests
    import sqlalchemy.exc
    from prefect.flow_engine import FlowRunTimeoutError

    never = (UserError, FlowRunTimeoutError, asyncio.CancelledError)  # CancelledError: the flow timeout firing
    transient = (
        ConnectionError, TimeoutError,  # refused / reset sockets, broken pipes, socket timeouts
        requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError,
        sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError,
    )
    chain = list(_chain(exc))
    if any(isinstance(e, never) for e in chain):
        return False
    return any(
        isinstance(e, transient)
        # an MlflowException from a tracking server that is up but overloaded
        or getattr(e, "error_code", None) in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")
        for e in chain
    )


def retry_only_transient(fn):
    """Flow-function wrapper: on a failure that is not transient, set this flow run's retries to 0
    before Prefect proposes the Failed state, so the server lets the run fail instead of retrying it.

    Prefect 3.8.8 has `retry_condition_fn` for tasks only; `@flow` takes no retry condition, and the
    server rule RetryFailedFlows (prefect/server/orchestration/core_policy.py) turns every Failed
    proposal into AwaitingRetry while `run_count <= empirical_policy.retries`, ignoring
    `state_details.retriable`. The run's policy is what it reads, so that is what this changes.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (Exception, asyncio.CancelledError) as exc:
            if not is_transient(exc):
                _stop_retries(exc)
            raise

    return wrapper


def _stop_retries(exc: BaseException) -> None:
    from prefect import get_client
    from prefect.context import FlowRunContext
    from prefect.logging import get_run_logger

    ctx = FlowRunContext.get()
    flow_run = ctx.flow_run if ctx else None
    if flow_run is None or not flow_run.empirical_policy.retries:
        return
    try:
        policy = flow_run.empirical_policy.model_copy(update={"retries": 0})
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, empirical_policy=policy)
        flow_run.empirical_policy = policy
        get_run_logger().info("Not retrying: %s is not a transient failure (a user error, a bug or the "
                              "flow's timeout, which surfaces here as CancelledError).", type(exc).__name__)
    except Exception as err:  # noqa: BLE001 - never mask the flow's own exception
        print(f"warning: could not cancel the retries of flow run {flow_run.id}: {err}", file=sys.stderr)


@flow(name="training-pipeline", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
@retry_only_transient
def training_pipeline(params: str = "params.yaml", force: bool = False) -> dict:
    cfg = load_config(params)
    results = {}
    with pipeline_run(cfg) as run_id:
        for stage_task in STAGE_TASKS:
            results[stage_task.name] = stage_task(cfg, run_id, force)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--force", action="store_true", help="run every stage even if dvc.lock says it is up to date")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    try:
        cfg = load_config(args.params)  # typed and validated once, before any work
        check_inputs(cfg)
        results = training_pipeline(args.params, args.force)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(summary(cfg, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
