"""End to end: the real Prefect flow (test harness), then `dvc repro`, MLflow registry and the gate."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.testing.utilities import prefect_test_harness

from mlcore.config import STAGES

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=180):
        yield


def dvc(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def ran(results: dict) -> list[str]:
    return [stage for stage, r in results.items() if not r["skipped"]]


def test_flow_dvc_registry_and_gate(tiny_project, prefect_api, set_params):
    from flows.training_flow import training_pipeline

    # The tiny reviews are separable word by word, so the TF-IDF baseline scores 1.0 on them and
    # a tie never promotes: with the baseline gate on, no model could ever become champion here.
    # This test is about the champion/challenger gate between versions; the baseline gate has its
    # own stage test (test_stages.py::test_evaluate_scores_the_baseline_and_register_never_crowns...).
    set_params(register={"require_beat_baseline": False})

    # 1. The whole flow runs every stage the first time.
    first = training_pipeline("params.yaml")
    assert ran(first) == list(STAGES)

    # 2. DVC agrees that everything is up to date: nothing to reproduce.
    assert json.loads(dvc("status", "--json")) == {}
    assert "Running stage" not in dvc("repro")

    # 3. Metrics are real and readable by `dvc metrics show`.
    metrics = json.loads(open("reports/metrics.json").read())
    assert metrics["accuracy"] > 0.75 and metrics["macro_f1"] > 0.75
    shown = dvc("metrics", "show", "--json")
    assert "accuracy" in shown and "macro_f1" in shown
    assert 0 < metrics["baseline_accuracy"] <= 1 and 0 < metrics["baseline_macro_f1"] <= 1
    registration = json.loads(open("reports/registration.json").read())
    assert registration["baseline_value"] == metrics["baseline_macro_f1"]
    assert registration["reason"].endswith("(not required)")

    # 4. The registry alias moved to the new version, and consumers can use it.
    client = MlflowClient()
    champion = client.get_model_version_by_alias("tiny-sentiment", "champion")
    assert str(champion.version) == "1"
    model = mlflow.pyfunc.load_model("models:/tiny-sentiment@champion")
    test = pd.read_parquet("data/processed/prepare/test.parquet")
    preds = model.predict(pd.DataFrame({"text": test["text"]}))
    assert set(preds) <= {"fresh", "rotten"}
    assert (preds.to_numpy() == test["label"].to_numpy()).mean() == pytest.approx(metrics["accuracy"], abs=0.02)

    # 4b. Each search trial is a Prefect task run inside the flow; the stage tasks wait for their
    # upstream stages (the graph's edges); the run ends with its summary artifact; no owner tags.
    async def prefect_record():
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort

        async with get_client() as prefect:
            found = await prefect.read_task_runs(sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)
            [flow_run] = await prefect.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
            artifact = await prefect.request("POST", "/artifacts/filter", json={
                "artifacts": {"key": {"any_": ["training-summary"]}}})
            return found, flow_run, artifact.json()

    import asyncio

    from flows.training_flow import UPSTREAM

    task_runs, flow_run, artifacts = asyncio.run(prefect_record())
    # one task run per trial the search recorded (2 here; gpu-full's 20 where CUDA is visible)
    trials = pd.read_csv("reports/search_trials.csv")
    assert len(trials) >= 2
    assert sorted(r.name for r in task_runs if r.name.startswith("trial-")) == sorted(
        f"trial-{n}" for n in trials["trial"])
    stage_ids = {r.name: r.id for r in task_runs if r.name in STAGES}
    for stage, upstream in UPSTREAM.items():
        waits = {i.id for i in next(r for r in task_runs if r.name == stage).task_inputs.get("wait_for", [])}
        assert waits == {stage_ids[u] for u in upstream}, stage
    assert not [tag for tag in flow_run.tags if tag.startswith("owner.") or tag == "pipeline-owner"]
    assert flow_run.labels["owner.pid"] == str(os.getpid())
    assert [a["flow_run_id"] for a in artifacts] == [str(flow_run.id)]
    assert "| **registered** | tiny-sentiment version 1 -> alias @champion" in artifacts[0]["data"]

    # 5. MLflow nesting: pipeline run > stage runs > search trials, with lineage tags.
    exp = client.get_experiment_by_name("tests")
    parent = client.search_runs([exp.experiment_id], "tags.`pipeline.role` = 'pipeline'")[0]
    assert parent.info.status == "FINISHED"
    assert all(parent.data.tags[f"stage.{s}"] == "ran" for s in STAGES)
    assert parent.data.tags["git.commit"] != "unknown" and len(parent.data.tags["data.raw_dvc_md5"]) == 32
    # the runs list's Dataset column: the pipeline run carries the splits too; the version its run id
    inputs = client.get_run(parent.info.run_id).inputs.dataset_inputs
    assert {d.dataset.name for d in inputs} == {"train", "val", "test"}
    v1 = client.get_model_version("tiny-sentiment", "1")
    assert json.loads(mlflow.artifacts.load_text(f"runs:/{v1.run_id}/lineage.json"))["runs"]["pipeline"] == \
        parent.info.run_id
    # the pipeline run's own row: the test metrics and the gate's decision
    assert parent.data.metrics["test_macro_f1"] == metrics["macro_f1"] and parent.data.tags["registered.alias"]
    stages = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in stages) == sorted(STAGES)
    search_run = next(r for r in stages if r.info.run_name == "search")
    trials = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{search_run.info.run_id}'")
    assert len(trials) == 2 and all(t.data.tags["trial.state"] in ("COMPLETE", "PRUNED") for t in trials)
    assert all("val_macro_f1" in t.data.metrics for t in trials)

    # 6. A deliberately worse fine-tune: only finetune and what follows rerun, and it becomes challenger.
    set_params(finetune={"learning_rate": 1e-7, "epochs": 1})
    assert set(json.loads(dvc("status", "--json"))) == {"finetune"}
    second = training_pipeline("params.yaml")
    assert ran(second) == ["finetune", "distill", "evaluate", "register"]
    latest = client.search_runs(
        [exp.experiment_id], "tags.`pipeline.role` = 'pipeline'", order_by=["start_time DESC"])[0]
    assert latest.data.tags["stage.prepare"].startswith("skipped") and latest.data.tags["stage.register"] == "ran"
    assert str(client.get_model_version_by_alias("tiny-sentiment", "challenger").version) == "2"
    assert str(client.get_model_version_by_alias("tiny-sentiment", "champion").version) == "1"
    assert json.loads(dvc("status", "--json")) == {}
    # the gate scored version 1 again on this run's test rows (the split is the same here)
    v2 = client.get_model_version("tiny-sentiment", "2").tags
    assert v2["gate.champion_version"] == "1" and "gate.champion_value_same_rows" in v2

    # 7. `dvc repro` reruns exactly the changed stage and the stages downstream of it.
    set_params(finetune={"epochs": 2})
    out = dvc("repro")
    assert re.findall(r"Running stage '(\w+)'", out) == ["finetune", "distill", "evaluate", "register"]
    assert json.loads(dvc("status", "--json")) == {}
    assert str(client.get_model_version_by_alias("tiny-sentiment", "champion").version) == "1"

    # 8. A researcher's experiment on top of the committed state: `dvc exp run -S ...`.
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(git + ["add", "-A", "dvc.lock", "params.yaml", "data/raw"], check=True)
    subprocess.run(git + ["commit", "-qm", "pipeline state"], check=True)
    out = dvc("exp", "run", "-S", "finetune.epochs=3")
    assert re.findall(r"Running stage '(\w+)'", out) == ["finetune", "distill", "evaluate", "register"]
    assert "Ran experiment" in out


def test_stage_failure_marks_runs_failed(tiny_project, prefect_api):
    from flows.training_flow import training_pipeline
    from mlcore.errors import UserError

    one_class = pd.read_csv("data/raw/reviews.csv").assign(category="fresh")
    one_class.to_csv("data/raw/reviews.csv", index=False)  # prepare cannot split a single class
    with pytest.raises(UserError, match="at least 2"):
        training_pipeline("params.yaml")
    client = MlflowClient()
    exp = client.get_experiment_by_name("tests")
    statuses = {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id])}
    assert statuses == {"pipeline": "FAILED", "prepare": "FAILED"}
    assert json.loads(dvc("status", "--json"))  # nothing was recorded as up to date


def test_image_flow_and_dvc_agree(image_project, prefect_api, set_params):
    """Images through the same flow and `dvc repro`: digits as class folders, a ResNet from scratch."""
    from flows.training_flow import training_pipeline

    first = training_pipeline("params.yaml")
    assert ran(first) == list(STAGES)
    assert json.loads(dvc("status", "--json")) == {}
    metrics = json.loads(open("reports/metrics.json").read())
    assert metrics["accuracy"] > 0.8 and 0 < metrics["baseline_accuracy"] <= 1
    assert json.loads(open("reports/pretrain.json").read())["architecture"] == "resnet"
    # A changed augmentation strength reruns finetune and what follows, under dvc repro as under the flow.
    set_params(finetune={"augment": 0.6})
    out = dvc("repro")
    assert re.findall(r"Running stage '(\w+)'", out) == ["finetune", "distill", "evaluate", "register"]
    assert json.loads(dvc("status", "--json")) == {}
    assert ran(training_pipeline("params.yaml")) == []
    versions = MlflowClient().search_model_versions("name = 'tiny-digits'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
