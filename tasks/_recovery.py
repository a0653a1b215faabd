"""What a killed run left behind, put right in one place, once, before any work.

Every driver that takes the workspace calls `recover` under the workspace lock, before its
first stage: the stage command (`tasks/_runner.py`, which `dvc repro` runs) and the flow
(`flows/training_flow.py`). What a kill can leave, and who mends it:

1. DVC's files: an interrupted `dvc.lock` commit, a torn `.dvc/tmp/rwlock` or `dvc.lock`.
   The workspace lock mends them itself as it takes DVC's lock (`_dvc_state.repair_torn_files`),
   because only then can no DVC process be running; under `dvc repro`, DVC holds that lock and
   reads these files before any of our code runs.
2. Prefect: flow runs of this workspace left RUNNING by a dead process are marked CRASHED.
   Only the flow talks to Prefect, so it passes that step in (`flows/_crashed.py`).
3. MLflow: RUNNING runs of the experiment whose owner died end FAILED (`runs.close_orphans`).
4. Optuna: trials of a dead owner are failed and queued again by the search stage when it
   opens its study (`studies.reap_stale_trials`), since the study's name depends on the data.

Whether an owner is dead is decided one way everywhere: `mlcore/liveness.py`.
"""
from __future__ import annotations

from collections.abc import Callable

from mlcore.config import Config
from mlcore.tracking import runs


def recover(cfg: Config, prefect: Callable[[], list[str]] | None = None) -> dict[str, list[str]]:
    """Close what killed runs of this workspace left open; returns what it closed, by system,
    and says so in one line when there was anything. `prefect`: the flow's own step (2 above),
    whose failure only warns: bookkeeping of old runs must not stop this one."""
    crashed: list[str] = []
    if prefect is not None:
        try:
            crashed = prefect()
        except Exception as err:  # noqa: BLE001 - Prefect unreachable, say, must not stop the run
            print(f"warning: could not check Prefect for runs a kill left RUNNING: {err}")
    closed = runs.close_orphans(cfg)
    if crashed or closed:
        print(f"a killed run left work open: marked CRASHED in Prefect: {', '.join(crashed) or 'none'}; "
              f"ended FAILED in MLflow: {', '.join(closed) or 'none'}")
    return {"prefect": crashed, "mlflow": closed}
