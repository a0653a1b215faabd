import pytest
from mlflow import MlflowClient

from mlcore.config import parse_config
from mlcore.tracking import runs, trial_runs


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return parse_config({"prepare": {"input": "raw.csv"}, "tracking": {"experiment": "unit"}})


def test_exceptions_mark_runs_failed_not_running(cfg):
    with pytest.raises(RuntimeError):
        with runs.pipeline_run(cfg) as parent:
            with runs.stage_run(cfg, "search", parent):
                with trial_runs.trial_run("trial-0"):
                    raise RuntimeError("boom")
    client = MlflowClient()
    exp = client.get_experiment_by_name("unit")
    statuses = {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id])}
    assert statuses == {"pipeline": "FAILED", "search": "FAILED", "trial-0": "FAILED"}


def test_pruned_trials_finish_tagged_and_named_as_pruned(cfg):
    class Pruned(Exception):
        pass

    with runs.stage_run(cfg, "search"):
        with pytest.raises(Pruned):
            with trial_runs.trial_run("trial-0", pruned=(Pruned,)):
                raise Pruned()
        with trial_runs.trial_run("trial-1", pruned=(Pruned,)):
            pass
    client = MlflowClient()
    exp = client.get_experiment_by_name("unit")
    found = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    # a pruned trial is a legitimate end of the search's work, not a failure (KILLED shows as one in the UI)
    assert found["trial-0 pruned"].info.status == "FINISHED"
    assert found["trial-0 pruned"].data.tags["trial.state"] == "PRUNED"
    assert found["trial-1"].info.status == "FINISHED" and found["trial-1"].data.tags["trial.state"] == "COMPLETE"
    assert found["search"].info.status == "FINISHED"
    assert found["trial-0 pruned"].data.tags["mlflow.parentRunId"] == found["search"].info.run_id


def test_raw_data_hash_prefers_the_dvc_file(tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_text("text,label\na,b\n")
    assert runs.raw_data_hash(raw) == runs.file_md5(raw)
    (tmp_path / "raw.csv.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef\n  path: raw.csv\n")
    assert runs.raw_data_hash(raw) == "0123456789abcdef0123456789abcdef"


def test_deployment_has_nightly_cron_schedule():
    from flows.deploy import NIGHTLY, build_deployment

    deployment = build_deployment()
    assert deployment.name == "nightly-retraining"
    assert [s.schedule.cron for s in deployment.schedules] == [NIGHTLY]
    assert deployment.parameters == {"params": "params.yaml", "force": False}
    custom = build_deployment(cron="0 */6 * * *")
    assert custom.schedules[0].schedule.cron == "0 */6 * * *"
    # One run at a time, an overlapping one cancelled; the served flow carries timeout and retries.
    from flows.deploy import RETRIES, TIMEOUT_S, nightly_retraining

    assert deployment.concurrency_limit == 1
    assert deployment.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    served = nightly_retraining().served_flow()
    assert (served.name, served.timeout_seconds, served.retries, served.retry_delay_seconds) == (
        "training-pipeline", TIMEOUT_S, RETRIES, 300)
    assert nightly_retraining(timeout=600).served_flow().timeout_seconds == 600
    assert served.on_failure_hooks and served.on_crashed_hooks  # the failure notification


def test_summary_shows_the_profile_and_the_truncated_share(cfg, monkeypatch):
    import json

    from flows.summary import summary
    from tasks import _paths as P

    monkeypatch.delenv("PIPELINE_DEVICE", raising=False)
    P.FINETUNE_REPORT.parent.mkdir(parents=True)
    numerics = {"device": "cpu", "precision": "bf16", "cpu": "AMD EPYC", "cpu_bf16_flags": "avx512_bf16",
                "cpu_capability": "AVX512", "threads": 2, "torch": "2.13.0+cpu"}
    P.FINETUNE_REPORT.write_text(json.dumps({"max_length": 55, "max_length_setting": "auto", "truncated_pct": 0.96,
                                             "numerics": numerics}))
    text = summary(parse_config({"runtime": {"device": "cpu"}}),
                   {"prepare": {"skipped": False, "seconds": 0.4}, "finetune": {"skipped": False, "seconds": 217.4}})
    assert "stages run: prepare (0 s), finetune (3 min 37 s)" in text  # each stage's time
    assert "profile:    cpu-quick (auto on cpu): params.yaml as written" in text
    assert "max_length: 55 (auto): truncates 0.96% of the training texts" in text
    assert ("numerics:   bf16 on cpu: AMD EPYC (native bf16: avx512_bf16), torch 2.13.0+cpu "
            "(CPU capability AVX512), 2 threads") in text  # what a bit-identical rerun must match
