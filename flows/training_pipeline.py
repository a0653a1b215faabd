"""Run the training pipeline: prepare -> pretrain -> search -> finetune -> distill -> evaluate
-> register (distill: off by default).

    python -m flows.training_pipeline [--params params.yaml] [--force] [--wait]

Each stage runs only when dvc.lock says it is out of date, so this and `dvc repro` always
agree on what needs to run; one addition DVC cannot see: register also runs when the MLflow
store now configured does not hold the version it registered (tasks/_dvc_state.registry_changes).
With nothing out of date it says so in seconds, without starting Prefect. One run per
workspace: a second flow, stage or `dvc repro` started beside it is refused with the holder's
pid and command (tasks/_workspace.py), or waits with --wait.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlcore.config import STAGES
from mlcore.errors import entry_point
from mlcore.models import checkpoint_link
from tasks import _dvc_state, _inputs
from tasks._process import exit_on_sigterm
from tasks._workspace import workspace_lock

FLOW_HOLDER = "the training-pipeline flow"  # flows.training_flow says the same
# There while a flow run started here has not ended. A kill leaves it, and the next run then goes
# through the flow even with nothing out of date: the flow's recovery marks the dead run CRASHED
# in Prefect (a kill after the last stage's commit would otherwise leave it RUNNING for good).
STARTED = Path(".checkpoints/flow-run.started")


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--force", action="store_true", help="run every stage even if dvc.lock says it is up to date")
    parser.add_argument("--wait", action="store_true",
                        help="if another run holds this workspace, wait for it instead of exiting")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    cfg = _inputs.load(args.params)  # typed and validated once, its input paths checked, before any work
    # Taken here, before Prefect starts its server, so a refused run costs seconds and leaves
    # no flow run behind; the flow takes it again (a no-op here) as deployments run it.
    with workspace_lock(FLOW_HOLDER, wait=args.wait, hold_dvc=True):
        checkpoint_link.refresh(cfg.pretrain.init_from)  # pretrain's DVC dependency on the checkpoint's files
        stale = [] if args.force else _dvc_state.out_of_date()
        if not args.force and not STARTED.exists() and not stale and not _dvc_state.registry_changes(cfg):
            # Safe to skip the flow: every stage task would ask the same questions (DVC's, and
            # register's: is its version in the configured MLflow store?) and skip.
            # What is skipped is orchestration only: importing the stages (torch, transformers,
            # Prefect, MLflow), Prefect's server and a pipeline MLflow run recording seven skips.
            from flows.summary import summary

            print("everything is up to date with dvc.lock: nothing to run (--force reruns every stage)")
            print(summary(cfg, {stage: {"stage": stage, "skipped": True} for stage in STAGES}))
            return 0
        from flows.summary import check_inputs, summary
        from flows.training_flow import training_pipeline

        check_inputs(cfg, data=args.force or any(name.split(":")[-1] == "prepare" for name in stale))
        STARTED.parent.mkdir(parents=True, exist_ok=True)
        STARTED.write_text(f"{os.getpid()}\n")
        try:
            results = training_pipeline(args.params, args.force, args.wait)
        finally:
            STARTED.unlink(missing_ok=True)
    print(summary(cfg, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
