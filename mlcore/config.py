"""Typed, validated configuration loaded once from params.yaml.

One section per pipeline stage (the same name as the dvc.yaml stage and the
tasks/ module) plus two shared sections, `runtime` and `tracking`, that do not
change results and so are not DVC params of any stage.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlcore.errors import UserError

STAGES = ("prepare", "pretrain", "search", "finetune", "evaluate", "register")
SHARED_SECTIONS = ("runtime", "tracking")

Optimizer = Literal["sgd", "sgd_momentum", "sgd_nesterov", "adagrad", "rmsprop", "adam", "adamw"]
ALL_OPTIMIZERS: tuple[str, ...] = ("sgd", "sgd_momentum", "sgd_nesterov", "adagrad", "rmsprop", "adam", "adamw")
Schedule = Literal["constant", "linear", "cosine", "exponential", "step"]
Strategy = Literal["full", "freeze_embeddings", "freeze_bottom", "head_only", "gradual_unfreeze"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


class ConfigError(UserError):
    pass


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingKnobs(_Section):
    """How a model is trained: shared, with the same names, by pretrain, search and finetune.

    The names match mlcore.models.classifier.TrainSettings field for field.
    """
    # Optimizer details (the optimizer and learning rate are set per section).
    weight_decay: float = Field(0.01, ge=0, lt=1)     # never applied to biases and LayerNorm weights
    momentum: float = Field(0.9, ge=0, lt=1)          # sgd_momentum and sgd_nesterov only
    # Learning-rate schedule after the warmup: constant | linear | cosine | exponential | step.
    schedule: Schedule = "linear"
    warmup: float = Field(0.1, ge=0)                  # below 1: a fraction of all steps; 1 or more: steps
    lr_gamma: float = Field(0.5, gt=0, le=1)          # exponential: factor per epoch; step: factor per drop
    lr_step_epochs: float = Field(1.0, gt=0)          # step: epochs between drops
    # Which weights train: full | freeze_embeddings | freeze_bottom | head_only | gradual_unfreeze.
    strategy: Strategy = "full"
    freeze_layers: int = Field(0, ge=0)               # freeze_bottom: how many encoder layers, from the bottom
    unfreeze_per_epoch: int = Field(1, ge=1)          # gradual_unfreeze: encoder layers thawed each epoch, top first
    layerwise_lr_decay: float = Field(1.0, gt=0, le=1)  # lr x decay^(depth below the top); 1 = off
    # Regularisation and stability.
    dropout: float | None = Field(None, ge=0, lt=1)   # null: the checkpoint's own dropout
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Literal["none", "auto"] = "none"   # auto: inverse class frequency (imbalanced labels)
    max_grad_norm: float | None = Field(1.0, gt=0)    # null: no clipping
    grad_accumulation: int = Field(1, ge=1)           # micro-batches per optimizer step
    # Efficiency.
    length_grouping: bool = True                      # batches of similar length: less padding
    precision: Precision = "auto"                     # auto: bf16 on CUDA (fp16 + scaler without bf16), fp32 on CPU
    compile: bool = False                             # torch.compile the model (pays off on long GPU runs)
    num_workers: int = Field(0, ge=0)                 # DataLoader workers for batching; 0: in the main process
    # A checkpoint each epoch; a rerun after a crash resumes from the last one.
    resume: bool = True
    # Also evaluate every N optimizer steps (null: at each epoch's end only). In search,
    # trials then report to the pruner mid-epoch; in finetune, patience counts evaluations.
    eval_every_steps: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _strategy_needs(self):
        if self.strategy == "freeze_bottom" and self.freeze_layers < 1:
            raise ValueError("strategy freeze_bottom needs freeze_layers >= 1")
        if self.strategy != "freeze_bottom" and self.freeze_layers:
            raise ValueError(f"freeze_layers is set but strategy is {self.strategy!r}; use strategy: freeze_bottom")
        return self


class PrepareConfig(_Section):
    input: str = "data/raw/rotten_tomatoes_corpus_full.csv.bz2"
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    text_column: str = "text"
    label_column: str = "category"
    # Rows of one group never straddle splits (no movie leaks into test).
    group_column: str | None = "movie_name"
    # Label values that mark unlabelled text: used for pretraining only.
    unlabelled_labels: list[str] = ["plot"]
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    seed: int = 42


class PretrainConfig(TrainingKnobs):
    # A local checkpoint directory for continued pretraining with its own
    # tokenizer, or null to train a tokenizer and a small BERT from scratch.
    init_from: str | None = None
    vocab_size: int = Field(8000, ge=200, le=250_000)
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1, le=48)
    num_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(512, ge=8)
    max_length: int = Field(128, ge=8, le=4096)
    epochs: int = Field(2, ge=0)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(5e-4, gt=0, lt=1)
    optimizer: Optimizer = "adamw"
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    whole_word_masking: bool = False                  # mask every piece of a chosen word together
    packing: bool = False                             # concatenate texts into full max_length blocks
    seed: int = 42

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "PretrainConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.class_weights != "none":
            raise ValueError("class_weights applies to classifiers (search, finetune), not to MLM pretraining")
        return self


class SearchSpace(_Section):
    """Optional search dimensions. A null dimension stays fixed at the search section's own
    value; [low, high] is a range (log scale for weight_decay), a longer list a set of choices."""
    weight_decay: tuple[float, float] | None = None
    warmup: tuple[float, float] | None = None
    layerwise_lr_decay: tuple[float, float] | None = None
    freeze_layers: tuple[int, int] | None = None      # sampled with strategy freeze_bottom (0 = full)
    batch_size: list[int] | None = None
    schedule: list[Schedule] | None = None
    momentum: tuple[float, float] | None = None       # conditional: sgd_momentum / sgd_nesterov trials only

    @model_validator(mode="after")
    def _ranges(self):
        for key in ("weight_decay", "warmup", "layerwise_lr_decay", "freeze_layers", "momentum"):
            bounds = getattr(self, key)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"space.{key}: low ({bounds[0]}) must be below high ({bounds[1]})")
        if self.weight_decay is not None and self.weight_decay[0] <= 0:
            raise ValueError("space.weight_decay is searched on a log scale: its low end must be above 0")
        for key in ("batch_size", "schedule"):
            if getattr(self, key) is not None and not getattr(self, key):
                raise ValueError(f"space.{key}: list at least one choice, or null to keep it fixed")
        return self


class SearchConfig(TrainingKnobs):
    n_trials: int = Field(8, ge=1)
    epochs: int = Field(3, ge=1)
    # The learning-rate range (log scale) for the adaptive optimizers (Adam, AdamW,
    # AdaGrad, RMSprop). Plain SGD needs a larger step: its range is scaled by sgd_lr_scale.
    lr_min: float = Field(1e-4, gt=0, lt=1)
    lr_max: float = Field(3e-3, gt=0, le=10)
    sgd_lr_scale: float = Field(30.0, gt=0)
    optimizers: list[Optimizer] = list(ALL_OPTIMIZERS)
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(128, ge=8, le=4096)
    # tpe: multivariate TPE (seeded); random; grid: every combination of `grid` below.
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    # successive_halving: on ag_news it trained 1/3 of a full grid's epochs where the
    # median pruner trained over half (bench/search_efficiency.py, README).
    pruner: Literal["median", "successive_halving", "hyperband", "none"] = "successive_halving"
    space: SearchSpace = SearchSpace()
    # The grid sampler's values: optimizer and learning_rate lists (learning rates as
    # given for every optimizer). Required with sampler: grid, ignored otherwise.
    grid: dict[Literal["optimizer", "learning_rate"], list] | None = None
    seed: int = 42
    # Worker processes on this machine sharing the study (each gets cores / workers threads).
    workers: int = Field(1, ge=1, le=64)
    # Optuna storage: null keeps the study in optuna/<study>.journal in the project.
    # An RDB URL (postgresql://...) works too; the OPTUNA_STORAGE env var overrides.
    storage: str | None = None
    study_name: str = "classifier-search"

    @model_validator(mode="after")
    def _lr_range(self) -> "SearchConfig":
        if self.lr_min >= self.lr_max:
            raise ValueError(f"lr_min ({self.lr_min}) must be below lr_max ({self.lr_max})")
        if not self.optimizers:
            raise ValueError("optimizers must name at least one optimizer")
        if self.workers > 1 and self.storage and self.storage.startswith("sqlite"):
            raise ValueError("workers > 1 cannot share a SQLite study (it locks under parallel writers); "
                             "use storage: null (a JournalFile) or a postgresql:// URL")
        if self.sampler == "grid":
            if not self.grid or set(self.grid) != {"optimizer", "learning_rate"}:
                raise ValueError("sampler grid needs grid: {optimizer: [...], learning_rate: [...]}")
            unknown = set(self.grid["optimizer"]) - set(ALL_OPTIMIZERS)
            if unknown:
                raise ValueError(f"grid.optimizer: unknown optimizers {sorted(unknown)}; choose from {list(ALL_OPTIMIZERS)}")
            if not all(isinstance(v, (int, float)) and v > 0 for v in self.grid["learning_rate"]):
                raise ValueError("grid.learning_rate: list positive numbers")
            if any(v is not None for v in self.space.model_dump().values()):
                raise ValueError("sampler grid searches grid.optimizer x grid.learning_rate only; set space.* to null")
        return self


class FinetuneConfig(TrainingKnobs):
    epochs: int = Field(6, ge=1)
    patience: int = Field(2, ge=1)
    min_delta: float = Field(0.0, ge=0)
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(128, ge=8, le=4096)
    # null takes the search's best value; a number overrides it.
    learning_rate: float | None = Field(None, gt=0, lt=10)
    optimizer: Optimizer | None = None
    # true: take the search's best trial model (at its best epoch) as the classifier, no retraining.
    reuse_best_trial: bool = False
    # true: retrain on train + validation with the search's best settings, for the best
    # trial's epoch count (no early stopping: no held-out rows are left to stop on).
    retrain_on_train_val: bool = False
    seed: int = 42

    @model_validator(mode="after")
    def _one_source(self) -> "FinetuneConfig":
        if self.reuse_best_trial and self.retrain_on_train_val:
            raise ValueError("reuse_best_trial and retrain_on_train_val are both true; choose one "
                             "(reuse ships the trial's model as it is, retrain trains a new one on train + val)")
        return self


class EvaluateConfig(_Section):
    batch_size: int = Field(256, ge=1)


class RegisterConfig(_Section):
    model_name: str = Field("rotten-tomatoes-sentiment", min_length=1)
    # The test metric that decides promotion to the `champion` alias.
    metric: Literal["accuracy", "macro_f1"] = "macro_f1"
    min_delta: float = Field(0.0, ge=0)


class RuntimeConfig(_Section):
    # auto: CUDA (bf16 autocast) when present, else CPU. PIPELINE_DEVICE overrides.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(None, ge=1)


class TrackingConfig(_Section):
    # null: MLFLOW_TRACKING_URI if set, else sqlite:///mlflow.db in the project root.
    mlflow_uri: str | None = None
    experiment: str = Field("finetune-pipeline", min_length=1)


# The `register` stage's section shares its name with ABCMeta.register on the model
# class; pydantic warns, harmlessly, since instances never call that classmethod.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Config(_Section):
    prepare: PrepareConfig = PrepareConfig()
    pretrain: PretrainConfig = PretrainConfig()
    search: SearchConfig = SearchConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    register: RegisterConfig = RegisterConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    tracking: TrackingConfig = TrackingConfig()

    def mlflow_uri(self) -> str:
        return (
            self.tracking.mlflow_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
        )

    def device(self) -> str:
        return os.environ.get("PIPELINE_DEVICE") or self.runtime.device

    def optuna_storage(self) -> str | None:
        return os.environ.get("OPTUNA_STORAGE") or self.search.storage


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling and section)"
        lines.append(f"  {key}: {msg}" + (f" (got {e['input']!r})" if e["type"] != "extra_forbidden" and not isinstance(e["input"], dict) else ""))
    return f"{path}: invalid configuration:\n" + "\n".join(lines) + "\nFix these keys in the file and run again."


def parse_config(data: dict, source: str | Path = "params.yaml") -> Config:
    try:
        return Config.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(Path(source), err)) from None


def load_config(path: str | Path = "params.yaml") -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such file. Run from the project root, which holds params.yaml, "
            f"or pass the path of your params file."
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections ({', '.join(STAGES)}).")
    return parse_config(data, path)
