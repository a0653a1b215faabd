"""The whole configuration: one section per pipeline stage plus `runtime` and `tracking`."""
from __future__ import annotations

import warnings
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mlcore.config.knobs import Section
from mlcore.config.search import SearchConfig
from mlcore.config.stages import (
    DistillConfig,
    EvaluateConfig,
    FinetuneConfig,
    PrepareConfig,
    PretrainConfig,
    RegisterConfig,
)

STAGES = ("prepare", "pretrain", "search", "finetune", "distill", "evaluate", "register")
SHARED_SECTIONS = ("runtime", "tracking")


# The budgets a run profile may raise (a larger value, or null for no limit, is more work).
BUDGET_KEYS = ("pretrain.epochs", "search.n_trials", "search.epochs", "search.max_train_rows", "finetune.epochs",
               "search.batch_size", "finetune.batch_size")
UNLIMITED_OK = ("search.max_train_rows",)


class RuntimeConfig(Section):
    """Where the stages run (not a DVC param of any stage), and the run profile: gpu-full
    raises budgets on a GPU, so the same params.yaml does more work there."""
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when present, else CPU; PIPELINE_DEVICE overrides it")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; null: torch's default")
    profile: Literal["auto", "cpu-quick", "gpu-full"] = Field(
        "auto", description="auto: gpu-full on CUDA, else cpu-quick; cpu-quick: params.yaml as written; "
                            "gpu-full: raises the budgets of gpu_full (the summary lists what changed)")
    gpu_full: dict[str, int | None] = Field(
        # batch 128: a GPU step costs about the same at 32 or 128 rows (launch-bound), and at 128
        # MiniLM held its accuracy over three seeds at 4x HF Trainer's samples/s (docs/benchmarks.md)
        {"search.n_trials": 20, "search.epochs": 3, "search.max_train_rows": None, "finetune.epochs": 6,
         "search.batch_size": 128, "finetune.batch_size": 128},
        description=f"gpu-full's budgets and batch sizes: each key is raised to at least its value (null: no "
                    f"limit), never lowered; keys from {', '.join(BUDGET_KEYS)}")

    @field_validator("gpu_full")
    @classmethod
    def _budget_keys(cls, budgets: dict[str, int | None]) -> dict[str, int | None]:
        for key, value in budgets.items():
            if key not in BUDGET_KEYS:
                raise ValueError(f"{key!r} is not a budget a profile may raise; use {', '.join(BUDGET_KEYS)}")
            if value is None and key not in UNLIMITED_OK or value is not None and value < 1:
                raise ValueError(f"{key}: must be a number of at least 1" + (" or null" if key in UNLIMITED_OK else ""))
        return budgets


class TrackingConfig(Section):
    """Where MLflow records runs; does not change results (not a DVC param of any stage)."""
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking/registry URI; null: $MLFLOW_TRACKING_URI if set, else sqlite:///mlflow.db "
                          "(the rule: mlcore/tracking/store.py)")
    experiment: str = Field("finetune-pipeline", min_length=1, description="the MLflow experiment")

    @field_validator("mlflow_uri")
    @classmethod
    def _usable_store(cls, uri: str | None) -> str | None:
        from mlcore.tracking.store import problem  # here: that module imports this package

        if not uri:
            return None  # blank is unset, as for the environment variable
        why = problem(uri)
        if why:
            raise ValueError(why)
        return uri


# The `register` stage's section shares its name with ABCMeta.register on the model
# class; pydantic warns, harmlessly, since instances never call that classmethod.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Config(Section):
    """Typed, validated params.yaml. One section per pipeline stage (the same name as the
    dvc.yaml stage and the tasks/ module) plus two shared sections, `runtime` and
    `tracking`, that are not DVC params of any stage (runtime.profile may raise the budgets
    on a GPU: mlcore.config.profiles)."""
    prepare: PrepareConfig = Field(PrepareConfig(), description=PrepareConfig.__doc__)
    pretrain: PretrainConfig = Field(PretrainConfig(), description=PretrainConfig.__doc__)
    search: SearchConfig = Field(SearchConfig(), description=SearchConfig.__doc__)
    finetune: FinetuneConfig = Field(FinetuneConfig(), description=FinetuneConfig.__doc__)
    distill: DistillConfig = Field(DistillConfig(), description=DistillConfig.__doc__)
    evaluate: EvaluateConfig = Field(EvaluateConfig(), description=EvaluateConfig.__doc__)
    register: RegisterConfig = Field(RegisterConfig(), description=RegisterConfig.__doc__)
    runtime: RuntimeConfig = Field(RuntimeConfig(), description=RuntimeConfig.__doc__)
    tracking: TrackingConfig = Field(TrackingConfig(), description=TrackingConfig.__doc__)

    @model_validator(mode="after")
    def _student_needs_distill(self) -> Config:
        if self.register.candidate == "student" and not self.distill.enabled:
            raise ValueError("register.candidate is 'student' but distill.enabled is false, so no student is "
                             "trained; set distill.enabled: true, or register.candidate: auto or teacher")
        return self

    # The environment's overrides are already in the fields: parse_config resolves them. The
    # MLflow store has a function of its own, mlcore.tracking.store.resolve_store(config).
    def device(self) -> str:
        """$PIPELINE_DEVICE, else runtime.device."""
        return self.runtime.device

    def optuna_storage(self) -> str | None:
        """$OPTUNA_STORAGE, else search.storage."""
        return self.search.storage
