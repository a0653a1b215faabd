import json
import random

import optuna
import pytest

from mlcore.config import SearchConfig
from mlcore.search import space, studies
from mlcore.tracking.promotion import decide, decide_alias


def test_decide_alias():
    assert decide_alias(0.7, None, 0.0) == "champion"
    assert decide_alias(0.8, 0.7, 0.05) == "champion"
    assert decide_alias(0.74, 0.7, 0.05) == "challenger"
    assert decide_alias(0.7, 0.7, 0.0) == "challenger"  # a tie does not displace the champion
    assert decide_alias(0.5, 0.7, 0.0) == "challenger"


def test_decide_never_crowns_a_model_that_does_not_beat_the_baseline():
    # below the baseline: challenger, even with no champion yet, and the reason says so
    below = decide("macro_f1", 0.70, None, 0.0, baseline_value=0.78)
    assert below.alias == "challenger"
    assert below.reason == "below baseline: macro_f1 0.7000 < baseline 0.7800"
    # ... and even when it beats the current champion
    assert decide("macro_f1", 0.70, 0.60, 0.0, baseline_value=0.78).alias == "challenger"
    # a tie with the baseline never promotes either
    tie = decide("accuracy", 0.78, None, 0.0, baseline_value=0.78)
    assert tie.alias == "challenger" and tie.reason.startswith("tied with baseline")
    # above the baseline: the champion comparison decides, as before
    first = decide("macro_f1", 0.80, None, 0.0, baseline_value=0.78)
    assert first.alias == "champion" and "no champion yet" in first.reason and "baseline 0.7800" in first.reason
    beats = decide("macro_f1", 0.85, 0.80, 0.02, baseline_value=0.78)
    assert beats.alias == "champion" and beats.reason.startswith("beats the champion")
    assert decide("macro_f1", 0.81, 0.80, 0.02, baseline_value=0.78).alias == "challenger"
    assert decide("macro_f1", 0.80, 0.80, 0.0, baseline_value=0.78).alias == "challenger"  # a tie with the champion


def test_decide_without_the_baseline_requirement_is_decide_alias():
    cases = [(0.7, None, 0.0), (0.8, 0.7, 0.05), (0.74, 0.7, 0.05), (0.7, 0.7, 0.0), (0.5, 0.7, 0.0)]
    for value, champion, delta in cases:
        for baseline in (None, 0.9, 0.1):
            off = decide("macro_f1", value, champion, delta, baseline_value=baseline, require_beat_baseline=False)
            assert off.alias == decide_alias(value, champion, delta)
    off = decide("macro_f1", 0.70, None, 0.0, baseline_value=0.78, require_beat_baseline=False)
    assert off.alias == "champion" and off.reason.endswith("baseline 0.7800 (not required)")
    # no baseline value at all (an old metrics.json): only the champion comparison
    assert decide("macro_f1", 0.70, None, 0.0).alias == "champion"


def test_study_identity_ignores_budget_but_not_space():
    base = SearchConfig()
    assert studies.study_name(base, "d") == studies.study_name(base.model_copy(update={"n_trials": 40}), "d")
    # the tie tolerance picks among finished trials: a rerun with another one continues the same study
    assert studies.study_name(base, "d") == studies.study_name(base.model_copy(update={"tie_tolerance": 0.0}), "d")
    assert studies.study_name(base, "d") != studies.study_name(base.model_copy(update={"lr_max": 0.1}), "d")
    assert studies.study_name(base, "d") != studies.study_name(base, "other-inputs")
    for data_budget in ({"max_train_rows": 500}, {"max_train_rows": None}, {"max_length": 64}):
        assert studies.study_name(base, "d") != studies.study_name(base.model_copy(update=data_budget), "d")


def test_the_best_trial_is_the_earliest_of_a_near_tie():
    # The sample data on a CPU with AVX512-BF16: trial 3 beat trial 1 by 7e-5 (another CPU picked trial 1)
    values = {0: 0.7784, 1: 0.79171, 3: 0.79178}
    assert studies.pick_best(values, 0.0) == 3
    assert studies.pick_best(values, 1e-4) == 1
    assert studies.pick_best(dict(reversed(values.items())), 1e-4) == 1  # the order trials finished in is irrelevant
    assert studies.pick_best({4: 0.8, 2: 0.8}, 0.0) == 2  # an exact tie: the earlier
    # a later trial that beats the best so far by more than the tolerance replaces it, even after near-ties
    assert studies.pick_best({0: 0.79, 1: 0.79008, 2: 0.79016}, 1e-4) == 2
    with pytest.raises(ValueError):
        studies.pick_best({}, 1e-4)
    rng = random.Random(0)
    for _ in range(200):
        scores = {n: round(rng.uniform(0.7, 0.7006), 5) for n in rng.sample(range(20), rng.randint(1, 8))}
        best = studies.pick_best(scores, 1e-4)
        assert scores[best] >= max(scores.values()) - 1e-4
        # picking as trials finish in order agrees with picking at the end (what keep_if_best relies on)
        numbers = sorted(scores)
        running = numbers[0]
        for n in numbers[1:]:
            running = studies.pick_best({running: scores[running], n: scores[n]}, 1e-4)
        assert running == best


def test_the_search_result_and_the_kept_model_agree_on_the_best_trial(tmp_path, tiny_base_dir):
    from mlcore.modality.text import TEXT
    from mlcore.models import modeling
    from mlcore.search.objective import keep_if_best

    model = modeling.load_classifier(tiny_base_dir, {"fresh": 0, "rotten": 1})[0]
    values = {0: 0.7784, 1: 0.79171, 2: None, 3: 0.79178, 4: 0.7801}  # trial 2 pruned
    study = optuna.create_study(direction="maximize")
    kept = tmp_path / "kept"
    for number, value in values.items():  # one at a time, as the search runs them by default
        finished = {t.number: t.value for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
        if value is not None:
            keep_if_best(TEXT, model, number, value, finished, 1e-4, tiny_base_dir, kept, tmp_path / "lock")
        study.add_trial(optuna.trial.create_trial(
            params={"learning_rate": 1e-4}, distributions={"learning_rate": optuna.distributions.FloatDistribution(
                1e-5, 1e-3, log=True)}, value=value,
            state=optuna.trial.TrialState.PRUNED if value is None else optuna.trial.TrialState.COMPLETE))
    assert study.best_trial.number == 3  # Optuna's own: the highest value
    best = studies.best_params(study, 1e-4)
    assert best["trial"] == studies.best_trial(study, 1e-4).number == 1 and best["val_macro_f1"] == 0.79171
    assert json.loads((kept / "trial.json").read_text()) == {"trial": 1, "value": 0.79171}
    # parallel workers: trial 6 finishes before trial 5, which ties with it: the earlier trial is kept
    finished = {number: value for number, value in values.items() if value is not None}
    assert keep_if_best(TEXT, model, 6, 0.80, finished, 1e-4, tiny_base_dir, kept, tmp_path / "lock")
    assert keep_if_best(TEXT, model, 5, 0.79995, finished, 1e-4, tiny_base_dir, kept, tmp_path / "lock")
    assert json.loads((kept / "trial.json").read_text()) == {"trial": 5, "value": 0.79995}


def test_budget_is_total_across_reruns(tmp_path):
    cfg = SearchConfig(n_trials=5, optimizers=["adam", "sgd"])
    storage = studies.make_storage(None, tmp_path, "s")

    def objective(trial):
        p = space.suggest(trial, cfg)
        low, high = space.lr_range(cfg, p["optimizer"])
        assert low <= p["learning_rate"] <= high and p["optimizer"] in ("adam", "sgd")
        return p["learning_rate"]

    study = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                sampler=studies.make_sampler(cfg), load_if_exists=True)
    study.optimize(objective, n_trials=3)
    again = optuna.create_study(study_name="s", storage=studies.make_storage(None, tmp_path, "s"),
                                direction="maximize", load_if_exists=True)
    assert studies.remaining_budget(again, cfg.n_trials) == 2
    again.optimize(objective, n_trials=studies.remaining_budget(again, cfg.n_trials))
    assert studies.finished_trials(again) == 5 and studies.remaining_budget(again, 5) == 0
    assert (tmp_path / "s.journal").is_file()


def test_seeded_sampler_repeats():
    cfg = SearchConfig(seed=3)
    def params(storage=None):
        study = optuna.create_study(sampler=studies.make_sampler(cfg), direction="maximize")
        study.optimize(lambda t: space.suggest(t, cfg)["learning_rate"], n_trials=4)
        return [t.params for t in study.trials]
    assert params() == params()


def test_sgd_gets_a_scaled_learning_rate_range():
    cfg = SearchConfig(lr_min=1e-4, lr_max=1e-3, sgd_lr_scale=30)
    assert space.lr_range(cfg, "adamw") == (1e-4, 1e-3)
    assert space.lr_range(cfg, "sgd_momentum") == (3e-3, 3e-2)


def _sample(cfg, n=12):
    study = optuna.create_study(sampler=studies.make_sampler(cfg), direction="maximize")
    seen = []
    study.optimize(lambda t: (seen.append(space.suggest(t, cfg)) or 0.0), n_trials=n)
    return seen


def test_optional_and_conditional_dimensions():
    from mlcore.config import parse_config

    cfg = parse_config({"search": {"sampler": "random", "optimizers": ["adamw", "sgd_momentum"], "space": {
        "weight_decay": [1e-4, 1e-1], "schedule": ["linear", "cosine"], "freeze_layers": [0, 2],
        "batch_size": [16, 32], "momentum": [0.8, 0.95]}}}).search
    for p in _sample(cfg, 20):
        assert (1e-4 <= p["weight_decay"] <= 1e-1 and p["schedule"] in ("linear", "cosine")
                and p["batch_size"] in (16, 32))
        assert ("momentum" in p) == (p["optimizer"] == "sgd_momentum")  # momentum only where it means something
        assert p["strategy"] == ("freeze_bottom" if p["freeze_layers"] else "full")
    plain = _sample(parse_config({}).search, 3)
    assert all(set(p) == {"learning_rate", "optimizer"} for p in plain)  # null dimensions stay fixed


def test_grid_sampler_covers_the_grid_once():
    from mlcore.config import parse_config

    grid = {"optimizer": ["adam", "sgd"], "learning_rate": [1e-4, 1e-3, 1e-2]}
    cfg = parse_config({"search": {"sampler": "grid", "grid": grid, "n_trials": 6}}).search
    seen = _sample(cfg, 6)
    assert sorted((p["optimizer"], p["learning_rate"]) for p in seen) == sorted(
        (o, lr) for o in grid["optimizer"] for lr in grid["learning_rate"])


@pytest.mark.parametrize("name,cls", [("median", optuna.pruners.MedianPruner), ("none", optuna.pruners.NopPruner),
                                      ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
                                      ("hyperband", optuna.pruners.HyperbandPruner)])
def test_pruners_by_name(name, cls):
    from mlcore.config import parse_config

    assert isinstance(studies.make_pruner(parse_config({"search": {"pruner": name}}).search), cls)


def test_study_plots_are_drawn(tmp_path):
    from mlcore import plots

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(t):
        x = t.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        t.suggest_categorical("optimizer", ["adam", "sgd"])
        for epoch in (1, 2):
            t.report(x * epoch, epoch)
        return x

    study.optimize(objective, n_trials=5)
    names = sorted(p.stem for p in plots.study_plots(study, tmp_path))
    assert names == ["intermediate_values", "optimization_history", "parallel_coordinate", "param_importances"]


def test_each_worker_claims_its_own_gpu_slot(tmp_path):
    """One trial per GPU: live workers hold distinct slots; a slot frees when its holder ends."""
    import subprocess
    import sys

    from mlcore.engine.device import claim_slot

    hold = "import sys, time; from pathlib import Path; from mlcore.engine.device import claim_slot; " \
           "print(claim_slot(Path(sys.argv[1]), 2), flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0"
        assert claim_slot(tmp_path, 2) == 1  # slot 0 is held by the other process
        assert claim_slot(tmp_path, 2) in (0, 1)  # all taken: shared, by pid
    finally:
        holder.kill()
        holder.wait()
    assert claim_slot(tmp_path, 2) == 0  # its holder ended: free again
