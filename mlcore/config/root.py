"""The whole configuration: one section per pipeline stage plus `runtime` and `tracking`."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

from pydantic import Field

from mlcore.config.knobs import Section
from mlcore.config.search import SearchConfig
from mlcore.config.stages import EvaluateConfig, FinetuneConfig, PrepareConfig, PretrainConfig, RegisterConfig

STAGES = ("prepare", "pretrain", "search", "finetune", "evaluate", "register")
SHARED_SECTIONS = ("runtime", "tracking")


class RuntimeConfig(Section):
    """Where the stages run; does not change results (not a DVC param of any stage)."""
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when present, else CPU; PIPELINE_DEVICE overrides it")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; null: torch's default")


class TrackingConfig(Section):
    """Where MLflow records runs; does not change results (not a DVC param of any stage)."""
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking/registry URI; null: $MLFLOW_TRACKING_URI if set, else sqlite:///mlflow.db")
    experiment: str = Field("finetune-pipeline", min_length=1, description="the MLflow experiment")


# The `register` stage's section shares its name with ABCMeta.register on the model
# class; pydantic warns, harmlessly, since instances never call that classmethod.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Config(Section):
    """Typed, validated params.yaml. One section per pipeline stage (the same name as the
    dvc.yaml stage and the tasks/ module) plus two shared sections, `runtime` and
    `tracking`, that do not change results and so are not DVC params of any stage."""
    prepare: PrepareConfig = Field(PrepareConfig(), description=PrepareConfig.__doc__)
    pretrain: PretrainConfig = Field(PretrainConfig(), description=PretrainConfig.__doc__)
    search: SearchConfig = Field(SearchConfig(), description=SearchConfig.__doc__)
    finetune: FinetuneConfig = Field(FinetuneConfig(), description=FinetuneConfig.__doc__)
    evaluate: EvaluateConfig = Field(EvaluateConfig(), description=EvaluateConfig.__doc__)
    register: RegisterConfig = Field(RegisterConfig(), description=RegisterConfig.__doc__)
    runtime: RuntimeConfig = Field(RuntimeConfig(), description=RuntimeConfig.__doc__)
    tracking: TrackingConfig = Field(TrackingConfig(), description=TrackingConfig.__doc__)

    # The environment's overrides are already in the fields: parse_config resolves them.
    def mlflow_uri(self) -> str:
        """tracking.mlflow_uri (else $MLFLOW_TRACKING_URI), else sqlite:///mlflow.db in the working directory."""
        return self.tracking.mlflow_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"

    def device(self) -> str:
        """$PIPELINE_DEVICE, else runtime.device."""
        return self.runtime.device

    def optuna_storage(self) -> str | None:
        """$OPTUNA_STORAGE, else search.storage."""
        return self.search.storage
