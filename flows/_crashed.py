"""A flow run whose process was killed (kill -9, OOM, a lost machine) cannot report its own end,
so Prefect would show it RUNNING forever. Each training flow run records its owner (host, pid,
the pid's start time, workspace) in its labels (owner.host, owner.pid, ...): key-value metadata
that the API returns (`prefect flow-run inspect <id>` shows it) but the UI does not list with the
run's tags, which stay the user's. The next run of the flow in the workspace marks the runs whose
owner is certainly dead CRASHED, with their running task runs, as MLflow runs and Optuna trials
already are (mlcore/liveness.py decides what is dead).
"""
from __future__ import annotations

from pathlib import Path

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterStateType,
    TaskRunFilter,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort
from prefect.context import FlowRunContext
from prefect.states import Crashed

from mlcore import liveness

FLOW = "training-pipeline"  # the flow whose runs claim an owner (flows/training_flow.py)
PREFIX = "owner."  # labels owner.host, owner.pid, owner.start, owner.workspace
LIMIT = 200  # runs read per query; more than any workspace's killed runs


def _workspace() -> str:
    return str(Path.cwd().resolve())


def claim_this_run() -> None:
    """Tag the current flow run with its owner, so that a later run can tell that it died."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    owner = {**liveness.owner(), "workspace": _workspace()}
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(ctx.flow_run.id, {f"{PREFIX}{key}": value for key, value in owner.items()})


def _owner(flow_run: FlowRun) -> dict[str, str]:
    """The owner a run claimed: in its labels, or, for a run of an older version, its tags."""
    labels = (flow_run.labels or {}).items()
    owner = {key.removeprefix(PREFIX): str(value) for key, value in labels if key.startswith(PREFIX)}
    return owner or dict(tag.removeprefix(PREFIX).split("=", 1) for tag in flow_run.tags
                         if tag.startswith(PREFIX) and "=" in tag)


def mark_dead_runs_crashed() -> list[str]:
    """Set CRASHED every RUNNING flow run of this workspace whose owner process is dead, and
    its RUNNING task runs. Returns the names of the flow runs it marked."""
    marked = []
    running = FlowRunFilterStateType(any_=[StateType.RUNNING])
    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW])),
            flow_run_filter=FlowRunFilter(state={"type": running}),
            sort=FlowRunSort.START_TIME_DESC, limit=LIMIT)
        for flow_run in flow_runs:
            owner = _owner(flow_run)
            if owner.get("workspace") != _workspace() or not liveness.is_dead(owner):
                continue
            why = f"its process (pid {owner.get('pid')} on {owner.get('host')}) died; marked by the next run"
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
                task_run_filter=TaskRunFilter(state={"type": TaskRunFilterStateType(any_=[StateType.RUNNING])}),
                sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=LIMIT)
            for task_run in tasks:
                client.set_task_run_state(task_run.id, Crashed(message=why), force=True)
            client.set_flow_run_state(flow_run.id, Crashed(message=why), force=True)
            marked.append(flow_run.name)
    return marked


def claim_and_mark_dead() -> list[str]:
    """The flow's step of tasks/_recovery.py: claim this run, then mark CRASHED the runs of
    this workspace whose owner died. Returns the names of the flow runs it marked."""
    claim_this_run()
    return mark_dead_runs_crashed()
