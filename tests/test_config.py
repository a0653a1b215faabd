import pytest
import yaml
from pydantic import ValidationError

from mlcore.config import STAGES, Config, ConfigError, load_config, parse_config
from mlcore.tracking.store import resolve_store
from tests.conftest import ROOT


def test_project_params_load_and_cover_every_stage():
    cfg = load_config(ROOT / "params.yaml")
    assert isinstance(cfg, Config)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(STAGES) <= set(raw)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError) as err:
        parse_config({"finetune": {"epoch": 3}})
    assert "finetune.epoch" in str(err.value)
    assert "unknown key" in str(err.value)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError) as err:
        parse_config({"search": {"n_trials": "many"}})
    assert "search.n_trials" in str(err.value)


@pytest.mark.parametrize(
    "section, values, key",
    [
        ("search", {"lr_min": 0.1, "lr_max": 0.01}, "search"),
        ("pretrain", {"hidden_size": 30, "num_heads": 4}, "pretrain"),
        ("prepare", {"val_fraction": 0.7}, "prepare.val_fraction"),
        ("finetune", {"epochs": 0}, "finetune.epochs"),
        ("search", {"optimizers": ["lion"]}, "search.optimizers.0"),
        ("register", {"metric": "auc"}, "register.metric"),
        ("finetune", {"schedule": "onecycle"}, "finetune.schedule"),
        ("search", {"strategy": "freeze_bottom"}, "search"),
        ("finetune", {"freeze_layers": 2}, "finetune"),
        ("pretrain", {"class_weights": "auto"}, "pretrain"),
        ("finetune", {"precision": "fp8"}, "finetune.precision"),
        ("finetune", {"grad_accumulation": 0}, "finetune.grad_accumulation"),
        ("pretrain", {"layerwise_lr_decay": 1.5}, "pretrain.layerwise_lr_decay"),
        ("search", {"eval_every_steps": 0}, "search.eval_every_steps"),
        ("finetune", {"reuse_best_trial": True, "retrain_on_train_val": True}, "finetune"),
        ("finetune", {"max_length": 7}, "finetune.max_length"),
        ("search", {"max_length": "longest"}, "search.max_length"),
        ("search", {"max_train_rows": 0}, "search.max_train_rows"),
        ("runtime", {"profile": "turbo"}, "runtime.profile"),
        ("runtime", {"gpu_full": {"search.lr_max": 0.1}}, "runtime.gpu_full"),
        ("runtime", {"gpu_full": {"search.n_trials": None}}, "runtime.gpu_full"),
    ],
)
def test_impossible_values_are_named(section, values, key):
    with pytest.raises(ConfigError) as err:
        parse_config({section: values})
    assert key in str(err.value)


def test_unknown_section_is_named():
    with pytest.raises(ConfigError) as err:
        parse_config({"finetuning": {}})
    assert "finetuning" in str(err.value)


def test_config_is_frozen():
    cfg = parse_config({})
    with pytest.raises(ValidationError, match="Instance is frozen"):
        cfg.finetune.epochs = 3


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("prepare: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x.db")
    monkeypatch.setenv("PIPELINE_DEVICE", "cpu")
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://u@localhost/db")
    cfg = parse_config({})  # the environment is resolved when the config is parsed
    assert resolve_store(cfg) == "sqlite:////tmp/x.db"
    assert cfg.device() == "cpu"
    assert cfg.optuna_storage() == "postgresql://u@localhost/db"
    explicit = parse_config({"tracking": {"mlflow_uri": "http://127.0.0.1:5000"}})
    assert resolve_store(explicit) == "http://127.0.0.1:5000"


def test_training_keys_are_shared_by_the_three_training_sections():
    from mlcore.config.training import to_settings

    cfg = parse_config({k: {"schedule": "cosine", "strategy": "freeze_bottom", "freeze_layers": 1}
                        for k in ("pretrain", "search", "finetune")})
    for section in (cfg.pretrain, cfg.search, cfg.finetune):
        s = to_settings(section, learning_rate=1e-3, optimizer="adam")
        assert (s.schedule, s.strategy, s.freeze_layers) == ("cosine", "freeze_bottom", 1)


def test_max_length_is_auto_by_default_and_an_integer_still_fixes_it():
    cfg = parse_config({"finetune": {"max_length": 64}, "search": {"max_length": "96"}})
    assert cfg.finetune.max_length == 64 and cfg.search.max_length == 96 and cfg.pretrain.max_length == "auto"


def test_run_profile_raises_budgets_on_a_gpu_and_leaves_the_cpu_config_alone():
    from mlcore.config import profiles
    from mlcore.search import studies

    cfg = parse_config({"search": {"n_trials": 6, "epochs": 2, "max_train_rows": 2000},
                        "finetune": {"epochs": 8}})
    cpu = profiles.effective(cfg, "cpu")
    assert cpu.profile == "cpu-quick" and not cpu.changes
    assert all(getattr(cpu.config, s) == getattr(cfg, s) for s in STAGES)  # every stage as params.yaml says
    assert cpu.describe() == "cpu-quick (auto on cpu): params.yaml as written"

    gpu = profiles.effective(cfg, "cuda")
    assert gpu.profile == "gpu-full" and gpu.config.runtime.profile == "gpu-full"
    assert gpu.changes == {"search.n_trials": (6, 20), "search.epochs": (2, 3), "search.max_train_rows": (2000, None),
                           "search.batch_size": (32, 128), "finetune.batch_size": (32, 128)}
    assert gpu.config.finetune.epochs == 8  # raised to at least 6, never lowered
    assert "search.max_train_rows 2000 -> null" in gpu.describe()
    assert profiles.effective(gpu.config, "cuda").config == gpu.config  # resolving again changes nothing
    assert studies.study_name(gpu.config.search, "d") != studies.study_name(cfg.search, "d")  # a fresh study

    named = parse_config({"runtime": {"profile": "cpu-quick"}})
    assert profiles.effective(named, "cuda").profile == "cpu-quick"  # a named profile holds on any device
    assert profiles.effective(parse_config({"runtime": {"profile": "gpu-full"}}), "cpu").changes
