"""What the Prefect UI shows of a run: the training summary as an artifact, pruned trials as
Pruned, the workspace owner kept out of the run's tags (in its labels, where the next run still
finds a dead owner), and batch-scoring task runs named for what they did, with each bad row in
the log. The graph's edges: tests/test_structure.py (against dvc.yaml) and tests/test_e2e.py."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from uuid import uuid4

import optuna
import pandas as pd
import pytest
from prefect._internal.engine import resolve_custom_task_run_name
from prefect.client.schemas.objects import FlowRun

from flows import _crashed
from flows import batch_predict as bp
from mlcore.scoring import rows
from mlcore.search.studies import StudyHandle
from tasks._search import pool

REGISTRATION = {"model_name": "m", "version": "3", "alias": "challenger", "metric": "macro_f1", "value": 0.70,
                "reason": "below baseline: macro_f1 0.7000 < baseline 0.7800", "previous_champion_value": None}


def write_reports(folder: Path) -> None:
    from tasks import _paths as P

    (folder / P.REPORTS).mkdir(parents=True)
    (folder / P.METRICS).write_text(json.dumps({
        "accuracy": 0.75, "macro_f1": 0.70, "macro_precision": 0.7, "macro_recall": 0.7, "n": 100,
        "baseline_accuracy": 0.80, "baseline_macro_f1": 0.78}))
    (folder / P.REGISTRATION).write_text(json.dumps(REGISTRATION))


def test_the_artifact_shows_the_metrics_the_baseline_the_gate_and_the_version(tmp_path, monkeypatch):
    from flows.summary import markdown, summary
    from mlcore.config import Config

    monkeypatch.chdir(tmp_path)
    write_reports(tmp_path)
    monkeypatch.setattr("flows.summary.holds", lambda *args: True)  # the store check: tests/test_store.py
    results = {"evaluate": {"skipped": False, "seconds": 3.0}, "prepare": {"skipped": True}}
    text = markdown(Config(), results)
    rows_ = text.splitlines()
    assert rows_[:4] == ["## Training pipeline run", "", "| | |", "|---|---|"]
    assert "| **stages run** | evaluate (3 s)   up to date (skipped): prepare |" in rows_
    test = rows_.index("| **test** | accuracy 0.7500  macro-F1 0.7000  macro-P 0.7000  macro-R 0.7000  (n=100) |")
    # the printed test line's second part, the baseline's, on a row of its own
    assert rows_[test + 1] == "| | TF-IDF baseline: accuracy 0.8000 (model -0.0500)  macro-F1 0.7800 (model -0.0800) |"
    assert "| **registered** | m version 3 -> alias @challenger  (macro_f1 0.7000; no previous champion) |" in rows_
    assert f"| **why** | {REGISTRATION['reason']} |" in rows_
    # the same facts as the printed summary, in the same order
    printed = [line.split(":", 1)[0] for line in summary(Config(), results).splitlines()[2:-1]]
    assert [row.split("**")[1] for row in rows_[4:] if "**" in row] == printed


def _worker(monkeypatch, objective):
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(direction="maximize", storage=storage)
    monkeypatch.setattr(pool, "_WORKER", {"handle": StudyHandle.of(study, storage), "objective": objective})
    return study, study.ask().number


def test_a_pooled_trial_reads_pruned_when_pruned_failed_when_it_diverged(monkeypatch):
    def pruned(trial):
        raise optuna.TrialPruned("pruned at epoch 1")

    study, number = _worker(monkeypatch, pruned)
    state = pool.pooled_trial.fn(number)
    assert (state.type.value, state.name, state.message) == ("COMPLETED", "Pruned", "trial 0 pruned")
    assert state.data == {"trial": 0, "state": "PRUNED"} and study.trials[0].state.name == "PRUNED"

    def diverged(trial):
        raise FloatingPointError("loss is nan")

    study, number = _worker(monkeypatch, diverged)
    state = pool.pooled_trial.fn(number)
    assert (state.type.value, state.data) == ("FAILED", {"trial": 0, "state": "FAIL"})

    study, number = _worker(monkeypatch, lambda trial: 0.5)
    assert pool.pooled_trial.fn(number) == {"trial": 0, "state": "COMPLETE"}


def test_batch_task_runs_are_named_for_what_they_did_and_bad_rows_listed(tmp_path):
    path = tmp_path / "inbox.csv"
    pd.DataFrame({"id": [1, 2, 3, 4], "text": ["good film", "", "dull", "   "]}).to_csv(path, index=False)
    data = rows.read_rows(path)
    parameters = {"ref": None, "data": data, "out": str(tmp_path / "out" / "scored.parquet"), "chunk_rows": 2,
                  "path": str(path), "uri": "models:/m@champion", "experiment": "batch-scoring"}
    names = {t.name: resolve_custom_task_run_name(t, parameters)
             for t in (bp.resolve_model, bp.read_input, bp.score, bp.write_output, bp.record_run)}
    assert names == {"resolve-model": "resolve models:/m@champion", "read-input": "read inbox.csv",
                     "score": "score inbox.csv: 2 of 4 rows", "write-output": "write scored.parquet",
                     "record-run": "record the run in MLflow (batch-scoring)"}
    assert rows.bad_rows(data, 10) == ["row 2 not scored: empty text", "row 4 not scored: whitespace-only text"]
    assert rows.bad_rows(data, 1) == ["row 2 not scored: empty text",
                                      "... and 1 more rows not scored: the output's `reason` column says why"]


def test_the_owner_is_read_from_the_labels_or_an_older_runs_tags():
    owner = {"owner.host": "h", "owner.pid": 12, "owner.start": "9", "owner.workspace": "/w"}
    want = {"host": "h", "pid": "12", "start": "9", "workspace": "/w"}
    assert _crashed._owner(FlowRun(flow_id=uuid4(), labels={"prefect.flow.id": "x", **owner}, tags=["nightly"])) == want
    legacy = ["pipeline-owner", *(f"{key}={value}" for key, value in owner.items())]
    assert _crashed._owner(FlowRun(flow_id=uuid4(), tags=legacy)) == want
    assert _crashed._owner(FlowRun(flow_id=uuid4(), tags=["nightly"])) == {}


# ---------------------------------------------------------------- against Prefect's API


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def _task_runs(client, flow_run_id) -> dict:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    found = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                  sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=50)
    return {run.name: run.state for run in found}


@pytest.mark.slow
def test_in_the_flow_a_pruned_trial_ends_pruned_and_a_failing_one_failed(prefect_api):
    from prefect import flow, get_client
    from prefect.context import FlowRunContext

    def objective(trial):
        if trial.number == 1:
            raise optuna.TrialPruned("pruned at epoch 2")
        if trial.number == 2:
            raise FloatingPointError("loss is nan")
        return 0.9

    @flow(name="trials")
    def trials():
        run = pool.as_prefect_tasks(objective)
        study = optuna.create_study(direction="maximize")
        study.optimize(run, n_trials=3, catch=(FloatingPointError,))
        return [t.state.name for t in study.trials], FlowRunContext.get().flow_run.id

    outcomes, flow_run_id = trials()
    assert outcomes == ["COMPLETE", "PRUNED", "FAIL"]  # the pruning reaches Optuna as before
    with get_client(sync_client=True) as client:
        states = _task_runs(client, flow_run_id)
    assert {name: (s.type.value, s.name) for name, s in states.items()} == {
        "trial-0": ("COMPLETED", "Completed"), "trial-1": ("COMPLETED", "Pruned"), "trial-2": ("FAILED", "Failed")}
    assert states["trial-1"].message == "trial 1 pruned at epoch 2"


@pytest.mark.slow
def test_the_flow_publishes_its_summary_as_the_training_summary_artifact(prefect_api, tmp_path, monkeypatch):
    from prefect import flow, get_client
    from prefect.client.schemas.objects import Artifact
    from prefect.context import FlowRunContext

    from flows import summary
    from mlcore.config import Config

    monkeypatch.chdir(tmp_path)
    write_reports(tmp_path)
    monkeypatch.setattr("flows.summary.holds", lambda *args: True)

    @flow(name="summarised")
    def summarised():
        summary.publish(Config(), {"register": {"skipped": False, "seconds": 1.0}})
        return FlowRunContext.get().flow_run.id

    flow_run_id = summarised()
    with get_client(sync_client=True) as client:
        # The route itself: client.read_artifacts sends None for the filters left out, which this server refuses.
        found = client.request("POST", "/artifacts/filter", json={"artifacts": {"key": {"any_": ["training-summary"]}}})
    [artifact] = Artifact.model_validate_list(found.json())
    assert artifact.flow_run_id == flow_run_id and artifact.type == "markdown"
    assert "| **registered** | m version 3 -> alias @challenger" in artifact.data
    assert "| **why** | below baseline" in artifact.data and "| **test** | accuracy 0.7500" in artifact.data


@pytest.mark.slow
def test_the_owner_goes_to_the_labels_and_a_dead_owners_run_is_marked_crashed(prefect_api, tmp_path, monkeypatch):
    from prefect import flow, get_client
    from prefect.context import FlowRunContext
    from prefect.states import Running

    from flows.training_flow import training_pipeline

    monkeypatch.chdir(tmp_path)
    assert training_pipeline.name == _crashed.FLOW

    @flow(name=_crashed.FLOW)
    def claimed():
        _crashed.claim_this_run()
        return FlowRunContext.get().flow_run.id

    mine = claimed()
    ended = subprocess.Popen(["true"])
    ended.wait()
    dead_pid = ended.pid
    here = {"host": socket.gethostname(), "start": "1", "workspace": str(tmp_path.resolve())}
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(mine)
        assert not [tag for tag in run.tags if tag.startswith("owner.") or tag == "pipeline-owner"]
        assert run.labels["owner.pid"] == str(os.getpid()) and run.labels["owner.workspace"] == here["workspace"]
        dead = client.create_flow_run(claimed, name="dead-owner", state=Running())
        client.update_flow_run_labels(dead.id, {f"owner.{k}": v for k, v in {**here, "pid": str(dead_pid)}.items()})
        older = client.create_flow_run(claimed, name="dead-owner-in-tags", state=Running(), tags=[
            f"owner.{k}={v}" for k, v in {**here, "pid": str(dead_pid)}.items()])
        alive = client.create_flow_run(claimed, name="live-owner", state=Running())
        client.update_flow_run_labels(alive.id, {"owner.host": here["host"], "owner.pid": str(os.getpid()),
                                                 "owner.workspace": here["workspace"]})
        assert sorted(_crashed.mark_dead_runs_crashed()) == ["dead-owner", "dead-owner-in-tags"]
        assert client.read_flow_run(dead.id).state.type.value == "CRASHED"
        assert client.read_flow_run(older.id).state.type.value == "CRASHED"
        assert client.read_flow_run(alive.id).state.type.value == "RUNNING"
