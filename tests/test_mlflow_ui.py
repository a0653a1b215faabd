"""What MLflow's UI shows of the pipeline: each experiment opens as model training in its own saved
view with its own description, and the links we print say so (mlcore/tracking/ui.py)."""
from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient

from mlcore.tracking import runs, trial_runs, ui
from mlcore.tracking.tags import KIND_TAG, NOTE_TAG


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # an earlier test's use_experiment set another
    return uri


def _state(tags: dict, key: str) -> dict:
    envelope = json.loads(tags[f"{ui.VIEW_TAG_PREFIX}{key}"])
    assert isinstance(envelope["name"], str) and isinstance(envelope["createdAt"], int)  # what the UI checks
    return json.loads(envelope["state"])


def test_each_experiment_gets_its_kind_its_own_description_and_its_saved_view(store):
    client = MlflowClient()
    training = client.get_experiment(runs.use_experiment(store, "train", ui.training("accuracy")))
    scoring = client.get_experiment(runs.use_experiment(store, "batch-scoring", ui.batch_scoring()))
    assert training.tags[KIND_TAG] == scoring.tags[KIND_TAG] == "custom_model_development"
    assert "fine-tuning pipeline" in training.tags[NOTE_TAG] and "Batch-scoring" in scoring.tags[NOTE_TAG]
    pipeline = _state(training.tags, "pipeline")
    assert "metrics.`test_accuracy`" in pipeline["selectedColumns"] and pipeline["orderByAsc"] is True
    assert "metrics.`rows_per_s`" in _state(scoring.tags, "scoring")["selectedColumns"]


def test_an_older_experiment_is_brought_up_to_date_but_a_description_a_person_wrote_stays(store):
    client = MlflowClient()
    old = client.create_experiment("batch-scoring", tags={NOTE_TAG: ui.OLD_SHARED_NOTE})
    mine = client.create_experiment("mine", tags={NOTE_TAG: "my own words"})
    runs.use_experiment(store, "batch-scoring", ui.batch_scoring())
    runs.use_experiment(store, "mine", ui.training("macro_f1"))
    assert client.get_experiment(old).tags[NOTE_TAG] == ui.batch_scoring().note
    tags = client.get_experiment(mine).tags
    assert tags[NOTE_TAG] == "my own words" and tags[KIND_TAG] == "custom_model_development"
    # a view whose columns changed (another gate metric) is rewritten; an unchanged one is left alone
    assert ui.wanted_tags(tags, ui.training("macro_f1")) == {}
    assert set(ui.wanted_tags(tags, ui.training("accuracy"))) == {f"{ui.VIEW_TAG_PREFIX}pipeline"}


def test_links_open_the_runs_as_model_training_in_the_saved_view(store, tmp_path):
    looks = {"train": ui.training("macro_f1"), "batch-scoring": ui.batch_scoring()}
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert ui.links(missing, looks) == [f"{ui.LOCAL_UI}/#/experiments?workflowType=machine_learning   (no runs yet)"]
    assert not (tmp_path / "none.db").exists()  # asking does not create a store
    exp_id = MlflowClient().create_experiment("train")  # made by an older release: no view yet
    [line] = ui.links(store, looks, "http://host:5000/")
    assert line == (f"http://host:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning"
                    f"&viewStateShareKey=pipeline   (train)")
    assert f"{ui.VIEW_TAG_PREFIX}pipeline" in MlflowClient().get_experiment(exp_id).tags


def test_the_confusion_matrix_draws_no_grid_lines_through_its_counts(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from mlcore import plots

    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    with plt.style.context("ggplot"):  # what Optuna's plots leave set in the search's process
        plots.confusion_matrix_png([[5, 1], [2, 7]], ["a", "b"], tmp_path / "cm.png")
    ax = figures[0].axes[0]
    assert not any(line.get_visible() for line in ax.get_xgridlines() + ax.get_ygridlines())


def test_the_pipeline_run_carries_the_test_metrics_the_baseline_and_the_decision(store, tmp_path):
    import pandas as pd

    from mlcore.config import parse_config
    from tasks import _outcome
    from tasks import _paths as P

    cfg = parse_config({"prepare": {"input": "raw.csv"}, "tracking": {"experiment": "unit"}})
    frames = {"train": pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]}),
              "unlabelled": pd.DataFrame({"text": []}), "val": pd.DataFrame({"text": ["c"], "label": ["x"]})}
    with runs.pipeline_run(cfg) as parent:
        with runs.stage_run(cfg, "search", parent):
            inputs = runs.dataset_inputs(frames, tmp_path)  # made once, logged on each trial
            with trial_runs.trial_run("trial-0"):
                runs.log_inputs(inputs)
        _outcome.record(parent)  # no reports yet: nothing to add
        P.REPORTS.mkdir(parents=True)
        P.METRICS.write_text(json.dumps({"macro_f1": 0.84, "baseline_macro_f1": 0.77, "n": 10, "per_class": {}}))
        P.REGISTRATION.write_text(json.dumps({"model_name": "m", "version": "3", "alias": "champion",
                                              "reason": "beats the champion: macro_f1 0.8400 vs 0.8300"}))
        _outcome.record(parent)
    client = MlflowClient()
    run = client.get_run(parent)
    assert run.data.metrics == {"test_macro_f1": 0.84, "test_baseline_macro_f1": 0.77, "test_n": 10}
    assert run.data.tags["registered.alias"] == "champion" and run.data.tags["gate.reason"].startswith("beats")
    assert run.data.tags[NOTE_TAG] == "m version 3 -> @champion: beats the champion: macro_f1 0.8400 vs 0.8300"
    [trial] = client.search_runs([run.info.experiment_id], "attributes.run_name = 'trial-0'")
    used = {(d.dataset.name, d.tags[0].value) for d in trial.inputs.dataset_inputs}
    assert used == {("train", "training"), ("val", "validation")}  # an empty split is no dataset


def test_the_logged_model_is_named_after_the_registered_one():
    from mlcore.tracking.registry import logged_name

    assert logged_name("rotten-tomatoes-sentiment") == "rotten-tomatoes-sentiment"
    assert logged_name("team/sentiment.v2") == "team-sentiment-v2"  # characters MLflow refuses in a logged name


def test_the_version_description_is_the_card_with_its_confusion_matrix_from_the_versions_artifacts():
    from mlcore.tracking import model_card

    card = ("# m\n\nWhat it is.\n\n## Test results\n| a |\n\n"
            "![Confusion matrix on the test split](confusion_matrix.png)\n")
    url = model_card.version_artifact_url("team model", "3", "artifacts/confusion_matrix.png")
    assert url == "model-versions/get-artifact?path=artifacts%2Fconfusion_matrix.png&name=team+model&version=3"
    description = model_card.registry_description(card, url)
    assert description.startswith("What it is.") and f"]({url})" in description and "# m" not in description
    long = card.replace("| a |", "| a |\n" * 3000)  # past MLflow's 5000 characters: the summary and the image
    assert model_card.registry_description(long, url) == (
        f"What it is.\n\n![Confusion matrix on the test split]({url})\n\n"
        "The whole model card is MODEL_CARD.md among this version's artifacts.")


def test_a_versions_tags_are_few_and_plain_and_its_lineage_is_whole_in_the_record():
    from mlcore.tracking import lineage

    record = {"git": {"commit": "abc", "dirty": True}, "data": {"raw_path": "data/raw/x.csv", "raw_dvc_md5": "0" * 32,
              "test_digest": "1" * 32}, "checkpoint": "from scratch", "search": {"study": "s", "best_trial": "2"},
              "numerics": {"precision": "bf16", "device": "cpu", "cpu": "AMD EPYC", "cpu_bf16_flags": "avx512_bf16",
                           "torch": "2.13.0", "cpu_capability": "AVX512", "threads": 2}}
    assert lineage.version_tags(record) == {
        "git.commit": "abc (uncommitted changes)", "data.raw_path": "data/raw/x.csv", "checkpoint": "from scratch",
        "optuna.study": "s", "numerics": "bf16 on cpu: AMD EPYC (native bf16: avx512_bf16), torch 2.13.0 "
                                         "(CPU capability AVX512), 2 threads"}
