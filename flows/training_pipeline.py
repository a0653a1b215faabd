"""The training pipeline flow: prepare -> pretrain -> search -> finetune -> evaluate -> register.

Each stage is a Prefect task that runs only when dvc.lock says it is out of date,
so this flow and `dvc repro` always agree on what needs to run.

    python -m flows.training_pipeline [--params params.yaml] [--force] [--wait]

One run per workspace: a second flow, stage or `dvc repro` started beside it is refused
with the holder's pid and command (tasks/_workspace.py), or waits with --wait.
"""
from __future__ import annotations

import argparse
import sys

from prefect import flow

from flows._hooks import notify_failure, retry_only_transient
from flows.summary import check_inputs, summary
from mlcore.config import load_config
from mlcore.errors import entry_point
from mlcore.tracking.runs import pipeline_run
from tasks import _dvc_state, evaluate, finetune, prepare, pretrain, register, search
from tasks._process import exit_on_sigterm
from tasks._workspace import workspace_lock

FLOW_HOLDER = "the training-pipeline flow"
STAGE_TASKS = [prepare.task, pretrain.task, search.task, finetune.task, evaluate.task, register.task]


@flow(name="training-pipeline", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
@retry_only_transient
def training_pipeline(params: str = "params.yaml", force: bool = False, wait: bool = False) -> dict:
    cfg = load_config(params)
    results = {}
    with workspace_lock(FLOW_HOLDER, wait=wait, hold_dvc=True), pipeline_run(cfg) as run_id:
        for stage_task in STAGE_TASKS:
            results[stage_task.name] = stage_task(cfg, run_id, force)
    return results


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--force", action="store_true", help="run every stage even if dvc.lock says it is up to date")
    parser.add_argument("--wait", action="store_true",
                        help="if another run holds this workspace, wait for it instead of exiting")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    cfg = load_config(args.params)  # typed and validated once, before any work
    # Taken here too, before Prefect starts its server, so a refused run costs seconds and
    # leaves no flow run behind; the flow takes it again (a no-op here) for deployments.
    with workspace_lock(FLOW_HOLDER, wait=args.wait, hold_dvc=True):
        if not args.force and not _dvc_state.out_of_date():
            # Safe to skip the flow: every stage task would ask DVC the same question and skip.
            # What is skipped is only orchestration: Prefect's server start-up and a pipeline
            # MLflow run that would record six skips (about 10 s; README, bench/overhead.py).
            print("everything is up to date with dvc.lock: nothing to run (--force reruns every stage)")
            print(summary(cfg, {stage.name: {"stage": stage.name, "skipped": True} for stage in STAGE_TASKS}))
            return 0
        check_inputs(cfg)
        results = training_pipeline(args.params, args.force, args.wait)
    print(summary(cfg, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
