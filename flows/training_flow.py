"""The training pipeline flow: prepare -> pretrain -> search -> finetune -> distill -> evaluate
-> register (distill is off by default, and then costs seconds).

Each stage is a Prefect task that runs only when dvc.lock says it is out of date,
so this flow and `dvc repro` always agree on what needs to run. Its command line is
flows/training_pipeline.py, which imports this module only when something is to run.
"""
from __future__ import annotations

from prefect import flow

from flows import _crashed, summary
from flows._hooks import notify_failure, retry_only_transient
from mlcore.tracking.runs import pipeline_run
from tasks import _inputs, _outcome, distill, evaluate, finetune, prepare, pretrain, register, search
from tasks._recovery import recover
from tasks._workspace import workspace_lock

FLOW_HOLDER = "the training-pipeline flow"
STAGE_TASKS = [prepare.task, pretrain.task, search.task, finetune.task, distill.task, evaluate.task, register.task]
# The stages each one waits for: some whose outputs it reads (dvc.yaml's deps, as tests/test_structure.py
# checks). The stages run in this order either way; passed as wait_for, these are the edges of the
# flow-run graph in the Prefect UI, which otherwise draws seven unrelated tasks.
UPSTREAM = {"prepare": [], "pretrain": ["prepare"], "search": ["prepare", "pretrain"], "finetune": ["search"],
            "distill": ["finetune"], "evaluate": ["distill"], "register": ["evaluate"]}


@flow(name="training-pipeline", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
@retry_only_transient
def training_pipeline(params: str = "params.yaml", force: bool = False, wait: bool = False) -> dict:
    cfg = _inputs.load(params)  # as the command line does: deployments run this flow without it
    results = {}
    with workspace_lock(FLOW_HOLDER, wait=wait, hold_dvc=True):
        recover(cfg, prefect=_crashed.claim_and_mark_dead)  # what a killed run left open, once
        with pipeline_run(cfg) as run_id:
            for stage_task in STAGE_TASKS:
                upstream = [results[name] for name in UPSTREAM[stage_task.name]]
                results[stage_task.name] = stage_task(cfg, run_id, force, wait_for=upstream)
            _outcome.record(run_id)  # the parent run's own metrics and decision
        summary.publish(cfg, results)  # the run's result in the UI: the artifact "training-summary"
    return results
