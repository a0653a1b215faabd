"""Typed, validated configuration loaded once from params.yaml.

One section per pipeline stage (the same name as the dvc.yaml stage and the tasks/
module) plus two shared sections, `runtime` and `tracking`, that are not DVC params of any
stage: where the stages run and record (runtime.profile may raise the budgets on a GPU;
see profiles). Every key's default and help live once, in the models here;
`python -m mlcore.config --defaults` prints them as a commented params.yaml.

    knobs        value types, the section base, the shared training keys (TrainingKnobs)
    stages       prepare, pretrain, finetune, evaluate, register
    search       search and its space (SearchSpace.settings_names: what a search samples)
    root         runtime, tracking and the whole Config
    environment  MLFLOW_TRACKING_URI, OPTUNA_STORAGE, PIPELINE_DEVICE into the raw params
    loading      params.yaml -> Config (environment resolved first), errors naming the key
    training     to_settings: a training section -> the engine's TrainSettings (imported from
                 mlcore.config.training, so that `import mlcore.config` stays free of the engine)
    defaults     every key with its default and help, as a commented params.yaml
    profiles     runtime.profile: the effective config on this device (gpu-full raises budgets on CUDA)
    overrides    the rule: a params.yaml value other than its default says `# override: <why>`
    __main__     python -m mlcore.config --defaults | --check [PARAMS]
"""
from mlcore.config.knobs import (
    ALL_OPTIMIZERS,
    Optimizer,
    Precision,
    Schedule,
    Section,
    Strategy,
    TrainingKnobs,
    stage_key,
    stage_only_names,
)
from mlcore.config.loading import ConfigError, load_config, parse_config
from mlcore.config.root import SHARED_SECTIONS, STAGES, Config, RuntimeConfig, TrackingConfig
from mlcore.config.search import SearchConfig, SearchSpace
from mlcore.config.stages import (
    DistillConfig,
    EvaluateConfig,
    FinetuneConfig,
    PrepareConfig,
    PretrainConfig,
    RegisterConfig,
)

__all__ = [
    "ALL_OPTIMIZERS", "Optimizer", "Precision", "Schedule", "Section", "Strategy", "TrainingKnobs", "stage_key",
    "stage_only_names", "ConfigError", "load_config", "parse_config", "SHARED_SECTIONS", "STAGES", "Config",
    "RuntimeConfig", "TrackingConfig", "SearchConfig", "SearchSpace", "EvaluateConfig", "FinetuneConfig",
    "DistillConfig", "PrepareConfig", "PretrainConfig", "RegisterConfig",
]
