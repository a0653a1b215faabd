"""What every stage shell shares: its CLI entry point and its Prefect task."""
from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mlcore.config import Config
from mlcore.errors import entry_point, quiet_user_error_tracebacks
from mlcore.tracking import runs
from tasks import _dvc_state, _inputs
from tasks._context import StageContext, stage_context
from tasks._process import exit_on_sigterm
from tasks._recovery import recover
from tasks._workspace import workspace_lock

# DVC logs "Updating lock file" at INFO through its own handler as well as Prefect's.
logging.getLogger("dvc").setLevel(logging.WARNING)


quiet_user_error_tracebacks()  # bad input inside a flow: its one paragraph, no traceback

StageFn = Callable[[StageContext], dict]


def cli(stage: str, run: StageFn, doc: str | None = None) -> Callable[[list[str] | None], int]:
    """`python -m tasks.<stage>`: the command dvc.yaml runs. No Prefect involved."""

    @entry_point
    def main(argv: list[str] | None = None) -> int:
        parser = argparse.ArgumentParser(prog=f"python -m tasks.{stage}", description=doc)
        parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        parser.add_argument("--wait", action="store_true",
                            help="if another run holds this workspace, wait for it instead of exiting")
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        exit_on_sigterm()
        ctx = stage_context(_inputs.load(args.params))  # input paths checked before DVC's or a reader's first touch
        # Under `dvc repro` (DVC_STAGE set) DVC already holds its own lock; run by hand,
        # the stage holds it too, so no `dvc repro` deletes its outputs under it.
        with workspace_lock(f"stage {stage}", wait=args.wait, hold_dvc="DVC_STAGE" not in os.environ):
            recover(ctx.cfg)  # what a killed run of this workspace left open, once, before work
            result = run(ctx)
        print(f"{stage}: done {result}")
        return 0

    return main


def as_task(stage: str, run: StageFn, outside_dvc: Callable[[Config], list] | None = None):
    """The Prefect task for a stage. It runs the stage only when DVC says it is out of date
    (or when forced, or when `outside_dvc` names a change DVC cannot see: register's version
    missing from the MLflow store), then records the run in dvc.lock, so `dvc repro` agrees afterwards."""

    # Prefect's own caching is off: dvc.lock alone decides what is up to date.
    @task(name=stage, cache_policy=NO_CACHE, task_run_name=stage)
    def stage_task(cfg: Config, parent_run_id: str | None = None, force: bool = False) -> dict:
        logger = get_run_logger()
        changed = _dvc_state.changes(stage) or (outside_dvc(cfg) if outside_dvc else [])
        if not changed and not force:
            logger.info("%s is up to date with dvc.lock: skipped", stage)
            runs.tag_run(parent_run_id, f"stage.{stage}", "skipped (up to date)")
            return {"stage": stage, "skipped": True}
        logger.info("%s runs: %s", stage, "forced" if not changed else _describe(changed))
        start = time.perf_counter()
        result = run(stage_context(cfg, parent_run_id))
        seconds = time.perf_counter() - start
        _dvc_state.commit(stage)
        runs.tag_run(parent_run_id, f"stage.{stage}", "ran")
        return {"stage": stage, "skipped": False, "seconds": round(seconds, 1), **result}

    return stage_task


def _describe(changes: list) -> str:
    """DVC's change records as 'changed deps: a, b; changed outs: c' (truncated)."""
    parts = []
    for change in changes:
        if isinstance(change, dict):
            parts += [f"{kind}: {', '.join(map(str, items)) if isinstance(items, dict) else items}"
                      for kind, items in change.items()]
        else:
            parts.append(str(change))
    text = "; ".join(parts)
    return text if len(text) < 240 else text[:237] + "..."
