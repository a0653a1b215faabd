"""What every scheduled flow attaches: a failure notification (log file and webhook) and
retries for transient failures only (a refused MLflow or database connection), never for
user errors, bugs or the flow's own timeout."""
from __future__ import annotations

import asyncio
import datetime
import functools
import json
import os
import sys
import urllib.request
from pathlib import Path

from mlcore.errors import UserError

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
    if any(getattr(e, "transient", False) for e in chain):  # e.g. tasks._workspace.WorkspaceBusy
        return True
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
