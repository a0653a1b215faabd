"""The search section: the Optuna study's budget, sampler, pruner, storage and space."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlcore.config.knobs import (
    ALL_OPTIMIZERS,
    MAX_LENGTH_HELP,
    MaxLength,
    Optimizer,
    Schedule,
    Section,
    TrainingKnobs,
    stage_key,
)


class SearchSpace(Section):
    """Optional search dimensions. A null dimension stays fixed at the search section's own
    value; [low, high] is a range (log scale for weight_decay), a longer list a set of choices.
    Each name is a training setting that a trial sets and finetune takes from the best trial."""
    weight_decay: tuple[float, float] | None = Field(None, description="e.g. [0.0001, 0.1] (log scale)")
    warmup: tuple[float, float] | None = Field(None, description="e.g. [0.0, 0.2]")
    layerwise_lr_decay: tuple[float, float] | None = Field(None, description="e.g. [0.7, 1.0]")
    freeze_layers: tuple[int, int] | None = Field(
        None, description="e.g. [0, 2]: bottom layers frozen, with strategy freeze_bottom (0: full fine-tuning)",
        json_schema_extra={"also_sets": ["strategy"]})
    batch_size: list[int] | None = Field(None, description="e.g. [16, 32, 64]")
    lora_rank: list[int] | None = Field(
        None, description="e.g. [4, 8, 16]: LoRA adapters of these ranks (sets strategy lora)",
        json_schema_extra={"also_sets": ["strategy"]})
    schedule: list[Schedule] | None = Field(None, description="e.g. [linear, cosine]")
    momentum: tuple[float, float] | None = Field(
        None, description="e.g. [0.8, 0.99]; sampled for sgd_momentum / sgd_nesterov trials only")
    augment: tuple[float, float] | None = Field(
        None, description="e.g. [0.0, 1.0], augmentation strength (images and text)")

    @classmethod
    def settings_names(cls) -> tuple[str, ...]:
        """The training settings a search can sample: every dimension, each preceded by
        the settings it also sets (freeze_layers and lora_rank set strategy), each name once."""
        names: list[str] = []
        for name, field in cls.model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            names += [n for n in (*extra.get("also_sets", ()), name) if n not in names]
        return tuple(names)

    @model_validator(mode="after")
    def _ranges(self):
        for key in ("weight_decay", "warmup", "layerwise_lr_decay", "freeze_layers", "momentum", "augment"):
            bounds = getattr(self, key)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"space.{key}: low ({bounds[0]}) must be below high ({bounds[1]})")
        if self.weight_decay is not None and self.weight_decay[0] <= 0:
            raise ValueError("space.weight_decay is searched on a log scale: its low end must be above 0")
        if self.lora_rank and self.freeze_layers:
            raise ValueError("space.lora_rank and space.freeze_layers each choose the strategy; search one of them")
        if self.lora_rank is not None and not all(isinstance(r, int) and r >= 1 for r in self.lora_rank):
            raise ValueError(f"space.lora_rank: list ranks of at least 1, e.g. [4, 8, 16]; got {self.lora_rank}")
        for key in ("batch_size", "schedule", "lora_rank"):
            if getattr(self, key) is not None and not getattr(self, key):
                raise ValueError(f"space.{key}: list at least one choice, or null to keep it fixed")
        return self


class SearchConfig(TrainingKnobs):
    """An Optuna study over learning rate, optimizer and the optional dimensions of `space`;
    the training keys apply to every trial."""
    # The budget of a CPU run in minutes: 6 trials of 2 epochs over max_train_rows
    # (runtime.profile gpu-full raises it on a GPU).
    n_trials: int = stage_key(6, "the study's total number of trials, across reruns", ge=1)
    epochs: int = Field(2, ge=1, description="epochs per trial")
    # Fine-tuning a pretrained encoder: adaptive optimizers want 2e-5..2e-4 (above ~5e-4 they
    # wreck the checkpoint), SGD with momentum about 50x that.
    lr_min: float = stage_key(
        2e-5, "low end of the log learning-rate range of adam, adamw, adagrad and rmsprop", gt=0, lt=1)
    lr_max: float = stage_key(2e-4, "high end of that range", gt=0, le=10)
    sgd_lr_scale: float = stage_key(
        50.0, "the SGD family searches [lr_min, lr_max] x this (SGD needs larger steps)", gt=0)
    # AdamW alone by default, so all 6 trials tune its learning rate: with RMSprop and SGD listed
    # too, a trial of 2 epochs on 2,000 rows once picked RMSprop by a 0.7-point val lead, and
    # its full fine-tune scored 5 points below AdamW's on SST-2 (docs/benchmarks.md, Quality on real data).
    # Any optimizer of the engine can be listed to search the optimizer as well.
    optimizers: list[Optimizer] = stage_key(
        ["adamw"], f"the optimizers to search, of {', '.join(ALL_OPTIMIZERS)}")
    batch_size: int = Field(32, ge=1, description="texts per batch")
    max_length: MaxLength = stage_key("auto", MAX_LENGTH_HELP)
    # 2,000 rows (63 steps of 32 per epoch): enough to tell a good optimizer and learning rate
    # from a bad one, at a fifth of the cost of the sample data's ~10k train rows per epoch.
    max_train_rows: int | None = stage_key(
        2000, "trials train on a seeded, stratified sample of this many train rows (the same for every trial); "
              "finetune uses all of train, validation stays whole; null: all rows", ge=10)
    sampler: Literal["tpe", "random", "grid"] = stage_key(
        "tpe", "tpe: multivariate TPE (seeded); random; grid: every combination of `grid`")
    # successive_halving: on ag_news it trained 1/3 of a full grid's epochs where the
    # median pruner trained over half (bench/search_efficiency.py, docs/benchmarks.md).
    pruner: Literal["median", "successive_halving", "hyperband", "none"] = stage_key(
        "successive_halving", "stops bad trials early, comparing their evaluations")
    space: SearchSpace = stage_key(SearchSpace(), "optional dimensions; null ones keep this section's value")
    grid: dict[Literal["optimizer", "learning_rate"], list] | None = stage_key(
        None, "sampler grid only, e.g. {optimizer: [adam, sgd], learning_rate: [0.0001, 0.001]}")
    # On the sample data trial 3 beat trial 1 by 7e-5 (0.79178 against 0.79171) on a CPU with avx512_bf16
    # alone, where one with amx_bf16 had picked trial 1: other bf16 kernels, other last bits, another
    # final model (docs/benchmarks.md, The default run on the sample data).
    tie_tolerance: float = stage_key(
        1e-4, "the val macro-F1 margin by which a later trial must beat the best so far to replace it: closer "
              "trials tie and the earlier wins, so last-bit differences between machines cannot flip the pick; "
              "0: the highest wins", ge=0, lt=1)
    seed: int = Field(42, description="random seed (the sampler's too)")
    workers: int = stage_key(
        1, "worker processes on this machine sharing the study (each gets cores / workers threads)", ge=1, le=64)
    storage: str | None = stage_key(None, "null: optuna/<study_name>.journal; or a postgresql:// URL; "
                                          "OPTUNA_STORAGE overrides it")
    # prefect: the stage submits search.workers flow runs of the deployment search-worker/trials, which
    # runners on other machines serve (flows/search_worker.py, docs/search.md "Several machines").
    engine: Literal["local", "prefect"] = stage_key(
        "local", "where search.workers run: local -- processes on this machine; prefect -- flow runs of the "
                 "deployment search-worker/trials on the machines that serve it (needs a postgresql:// storage)")
    study_name: str = stage_key("classifier-search", "the study's name, before its settings-and-inputs fingerprint")
    # RDB storages only (PostgreSQL): a JournalFile has no heartbeat, its dead trials are found by owner pid.
    heartbeat_interval: int = stage_key(
        30, "seconds between a running trial's heartbeats on an RDB storage (postgresql://)", ge=1)
    grace_period: int = stage_key(
        120, "seconds without a heartbeat after which the next claim fails a trial and retries it once "
             "with the same parameters (RDB storage); above heartbeat_interval", ge=1)

    @model_validator(mode="after")
    def _lr_range(self) -> SearchConfig:
        if self.lr_min >= self.lr_max:
            raise ValueError(f"lr_min ({self.lr_min}) must be below lr_max ({self.lr_max})")
        if not self.optimizers:
            raise ValueError("optimizers must name at least one optimizer")
        if self.workers > 1 and self.storage and self.storage.startswith("sqlite"):
            raise ValueError(f"workers is {self.workers} but storage is SQLite ({self.storage}), which locks under "
                             f"parallel writers; use storage: null (a JournalFile) or a postgresql:// URL")
        if self.sampler == "grid":
            if not self.grid or set(self.grid) != {"optimizer", "learning_rate"}:
                raise ValueError("sampler grid needs grid: {optimizer: [...], learning_rate: [...]}")
            unknown = set(self.grid["optimizer"]) - set(ALL_OPTIMIZERS)
            if unknown:
                raise ValueError(f"grid.optimizer: unknown optimizers {sorted(unknown)}; "
                                 f"choose from {list(ALL_OPTIMIZERS)}")
            if not all(isinstance(v, (int, float)) and v > 0 for v in self.grid["learning_rate"]):
                raise ValueError("grid.learning_rate: list positive numbers")
            if any(v is not None for v in self.space.model_dump().values()):
                raise ValueError("sampler grid searches grid.optimizer x grid.learning_rate only; set space.* to null")
        return self

    @model_validator(mode="after")
    def _engine(self) -> SearchConfig:
        # Workers on other machines share only what the network reaches: a file storage is this machine's.
        if self.engine == "prefect" and not (self.storage or "").startswith("postgresql"):
            raise ValueError(f"engine prefect runs trials on other machines, which must share the study: set "
                             f"search.storage (or $OPTUNA_STORAGE) to a postgresql:// URL (got {self.storage!r})")
        return self

    @model_validator(mode="after")
    def _heartbeat(self) -> SearchConfig:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period}) must be above heartbeat_interval "
                             f"({self.heartbeat_interval}), or a live trial between two beats is failed")
        return self
