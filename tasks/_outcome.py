"""The `pipeline` run's own row in MLflow: what the whole execution came to, from the reports the
stages leave (also those of stages that were up to date and skipped), so that the run a person
sees first carries the test metrics, the baseline's and the gate's decision."""
from __future__ import annotations

import json

from mlcore.tracking import runs
from tasks import _paths as P


def record(pipeline_run_id: str | None) -> None:
    """Log the current reports' outcome on the pipeline run; a report not there yet adds nothing."""
    if not pipeline_run_id:
        return
    metrics = json.loads(P.METRICS.read_text()) if P.METRICS.is_file() else {}
    registration = json.loads(P.REGISTRATION.read_text()) if P.REGISTRATION.is_file() else {}
    runs.log_outcome(pipeline_run_id, metrics, registration)
