"""TrainSettings and the searched names are derived from the config models, never written again."""
import dataclasses

import optuna
import pytest

from mlcore.config import (
    FinetuneConfig,
    PretrainConfig,
    SearchConfig,
    SearchSpace,
    TrainingKnobs,
    load_config,
    parse_config,
)
from mlcore.config.training import to_settings
from mlcore.engine.settings import TrainSettings
from mlcore.errors import UserError
from mlcore.search import space
from tests.conftest import ROOT

# What a stage sets itself (its own keys or overrides), not one of the shared training knobs.
ENGINE_ONLY = {"epochs", "batch_size", "learning_rate", "optimizer", "patience", "min_delta", "seed", "eval_batch_size"}
FIELDS = {f.name: f for f in dataclasses.fields(TrainSettings)}


def test_train_settings_are_the_knobs_plus_the_engine_only_fields():
    assert set(FIELDS) == set(TrainingKnobs.model_fields) | ENGINE_ONLY
    assert not set(TrainingKnobs.model_fields) & ENGINE_ONLY


def test_the_knobs_defaults_live_in_the_model_only():
    with_default = {name for name in TrainingKnobs.model_fields if FIELDS[name].default is not dataclasses.MISSING}
    assert not with_default, f"TrainSettings repeats the defaults of {sorted(with_default)}: build it with to_settings"
    with pytest.raises(TypeError, match="missing"):
        TrainSettings(epochs=1, batch_size=8, learning_rate=1e-2)
    assert not hasattr(TrainSettings, "from_section")


@pytest.mark.parametrize("section, values", [
    (PretrainConfig(), {}), (SearchConfig(), {"learning_rate": 1e-3, "optimizer": "adam"}),
    (FinetuneConfig(learning_rate=1e-3, optimizer="adam"), {})])
def test_a_section_converts_key_for_key(section, values):
    s = to_settings(section, **values)
    carried = {k: v for k, v in section.model_dump().items() if k in FIELDS}
    assert set(TrainingKnobs.model_fields) <= set(carried)
    assert {k: getattr(s, k) for k in carried} == carried


def test_values_override_the_section_and_no_section_means_the_knob_defaults():
    s = to_settings(FinetuneConfig(), learning_rate=2e-3, optimizer="sgd_momentum", momentum=0.8)
    assert (s.learning_rate, s.optimizer, s.momentum, s.epochs, s.patience) == (2e-3, "sgd_momentum", 0.8, 3, 2)
    bare = to_settings(epochs=1, batch_size=8, learning_rate=1e-2, seed=0)
    assert {k: getattr(bare, k) for k in TrainingKnobs.model_fields} == TrainingKnobs().model_dump()
    assert bare.optimizer == "adamw" and bare.patience is None


def test_an_unknown_name_is_an_error_never_dropped():
    with pytest.raises(TypeError,
                       match=r"to_settings\(FinetuneConfig\): \['learning_rat'\] are not TrainSettings fields"):
        to_settings(FinetuneConfig(), learning_rat=1e-3)

    class WithANewKnob(FinetuneConfig):
        gradient_checkpointing: bool = False

    with pytest.raises(TypeError, match=r"keys \['gradient_checkpointing'\] are neither TrainSettings fields "
                                        r"nor declared with stage_key"):
        to_settings(WithANewKnob(), learning_rate=1e-3, optimizer="adam")
    with pytest.raises(TypeError, match="takes a training section"):
        to_settings(parse_config({}).evaluate)


def test_fingerprints_are_pinned():
    """Checkpoints resume only onto identical settings: the conversion must keep giving the same
    values (pinned at the refactor; pretrain and finetune re-pinned when the pretrained-encoder
    defaults changed their epochs, learning rate and warmup)."""
    cfg = load_config(ROOT / "params.yaml")
    assert to_settings(cfg.pretrain).fingerprint() == "daf5b56eedd766a7"
    trial = {"learning_rate": 0.002, "optimizer": "sgd_momentum", "strategy": "freeze_bottom", "freeze_layers": 1}
    assert to_settings(cfg.search, **trial).fingerprint() == "168b22e22fbf1b37"
    assert to_settings(cfg.finetune, learning_rate=0.001, optimizer="adam").fingerprint() == "65caa9b1c93f4cc1"
    assert to_settings(epochs=1, batch_size=8, learning_rate=1e-2, seed=0).fingerprint() == "53a1d68fe44ff67a"


def test_searched_names_are_the_space_dimensions_plus_strategy():
    names = SearchSpace.settings_names()
    assert names == ("weight_decay", "warmup", "layerwise_lr_decay", "strategy", "freeze_layers", "batch_size",
                     "lora_rank", "schedule", "momentum", "augment")
    assert set(names) <= set(FIELDS)
    assert set(names) == set(SearchSpace.model_fields) | {"strategy"}


def test_searched_names_cover_what_a_trial_samples():
    cfg = parse_config({"search": {"sampler": "random", "optimizers": ["sgd_momentum"], "space": {
        "weight_decay": [1e-4, 1e-1], "warmup": [0.0, 0.2], "layerwise_lr_decay": [0.7, 1.0], "freeze_layers": [0, 1],
        "batch_size": [16, 32], "schedule": ["linear", "cosine"], "momentum": [0.8, 0.95],
        "augment": [0.0, 1.0]}}}, environ={}).search
    # lora_rank and freeze_layers each choose the strategy, so one space cannot hold both
    lora = parse_config({"search": {"space": {"lora_rank": [4, 8]}}}, environ={}).search
    sampled = set()
    for searched in (cfg, lora):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda t, c=searched: sampled.update(space.suggest(t, c)) or 0.0, n_trials=5)
    assert sampled - {"learning_rate", "optimizer"} == set(SearchSpace.settings_names())


def test_importing_the_config_does_not_import_the_engine():
    """prepare and register import mlcore.config; their dvc.yaml deps do not include mlcore/engine."""
    import subprocess
    import sys

    code = "import sys, mlcore.config; print(any(m.startswith('mlcore.engine') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_a_space_cannot_search_lora_rank_and_freeze_layers_at_once():
    with pytest.raises(UserError, match="space.lora_rank and space.freeze_layers"):
        parse_config({"search": {"space": {"lora_rank": [4, 8], "freeze_layers": [0, 1]}}}, environ={})
