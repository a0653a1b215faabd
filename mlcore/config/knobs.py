"""The config's shared vocabulary: value types, the strict frozen section base, and the
training keys (`TrainingKnobs`) that pretrain, search and finetune share.

Every key's default and its one-line help live here and in the section modules, once:
`python -m mlcore.config --defaults` prints them all as a commented params.yaml.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

Optimizer = Literal["sgd", "sgd_momentum", "sgd_nesterov", "adagrad", "rmsprop", "adam", "adamw"]
ALL_OPTIMIZERS: tuple[str, ...] = ("sgd", "sgd_momentum", "sgd_nesterov", "adagrad", "rmsprop", "adam", "adamw")
Schedule = Literal["constant", "linear", "cosine", "exponential", "step"]
Strategy = Literal["full", "freeze_embeddings", "freeze_bottom", "head_only", "gradual_unfreeze", "lora"]
Precision = Literal["auto", "fp32", "bf16", "fp16", "bf16-weights"]
TextAugmentOp = Literal["dropout", "span", "swap", "mask"]  # mlcore.engine.text_augment.OPS


def _max_length(value):
    """One message for any bad value (a plain union would report one error per branch)."""
    if value == "auto":
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 8 <= value <= 4096:
        raise ValueError("must be auto or an integer from 8 to 4096")
    return value


# Tokens per text: "auto" (a high percentile of the training texts' token lengths, capped
# by the model's limit: mlcore.engine.batching.resolve_max_length) or a fixed integer.
MaxLength = Annotated[Literal["auto"] | int, BeforeValidator(_max_length)]
MAX_LENGTH_HELP = ("tokens per text; longer texts are truncated. auto: the 99th percentile of the training texts' "
                   "token lengths, capped by the model's limit (reported as max_length and truncated_pct); "
                   "an integer fixes it")


class Section(BaseModel):
    """A params.yaml section: an unknown key is an error, and values are frozen once loaded."""
    model_config = ConfigDict(extra="forbid", frozen=True)


def stage_key(default, description: str, **constraints):
    """A key that its stage reads itself: `to_settings` leaves it out of the engine's
    TrainSettings (any other key of a training section must be a TrainSettings field)."""
    return Field(default, description=description, json_schema_extra={"stage_only": True}, **constraints)


def stage_only_names(model: type[BaseModel]) -> frozenset[str]:
    """The keys of a section declared with `stage_key`."""
    return frozenset(name for name, field in model.model_fields.items()
                     if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("stage_only"))


class TrainingKnobs(Section):
    """How a model is trained: shared, with the same names, by pretrain, search and finetune.

    These names are exactly the knob fields of mlcore.engine.settings.TrainSettings,
    which has no defaults of its own: `mlcore.config.to_settings` builds it from a section.
    """
    weight_decay: float = Field(
        0.01, ge=0, lt=1, description="weight decay; never applied to biases and LayerNorm weights")
    momentum: float = Field(
        0.9, ge=0, lt=1, description="momentum of sgd_momentum and sgd_nesterov (other optimizers ignore it)")
    schedule: Schedule = Field("linear", description="learning-rate schedule after the warmup")
    warmup: float = Field(
        0.1, ge=0,
        description="learning-rate warmup: below 1 a fraction of all optimizer steps, 1 or more a number of steps")
    lr_gamma: float = Field(
        0.5, gt=0, le=1, description="exponential: learning-rate factor per epoch; step: factor per drop")
    lr_step_epochs: float = Field(1.0, gt=0, description="step: epochs between learning-rate drops")
    strategy: Strategy = Field(
        "full", description="which weights train; lora: low-rank adapters on lora_targets plus the head, merged "
                            "into the weights when training ends (a plain model is saved)")
    freeze_layers: int = Field(
        0, ge=0, description="freeze_bottom: how many encoder layers are frozen, from the bottom")
    unfreeze_per_epoch: int = Field(
        1, ge=1, description="gradual_unfreeze: encoder layers thawed each epoch, top first")
    lora_rank: int = Field(8, ge=1, le=256, description="lora: the adapters' rank r")
    lora_alpha: float = Field(16.0, gt=0, description="lora: scaling; an adapter's update is multiplied by alpha / r")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="lora: dropout on the adapters' input")
    lora_targets: list[str] = Field(
        ["query", "value"], min_length=1,
        description="lora: names of the linear layers that get adapters (BERT-style: query, key, value, dense)")
    layerwise_lr_decay: float = Field(
        1.0, gt=0, le=1, description="each layer gets lr x decay^(its depth below the top); 1: off")
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout override; null: the checkpoint's own dropout")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the cross-entropy loss; 0: off")
    class_weights: Literal["none", "auto"] = Field(
        "none", description="loss weights; auto: inverse class frequency (imbalanced labels)")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping norm; null: no clipping")
    grad_accumulation: int = Field(1, ge=1, description="micro-batches per optimizer step")
    length_grouping: bool = Field(True, description="batches of texts of similar length: less padding")
    precision: Precision = Field(
        "auto", description="auto: bf16 autocast on CUDA (fp16 + scaler without bf16), and on a CPU with native bf16 "
                            "(AVX512-BF16 or AMX flags); fp32 on other CPUs; bf16-weights: the weights themselves in "
                            "bf16 while training, fp32 master copies in the optimizer (1.17x autocast's speed on an "
                            "H200 at large batches)")
    compile: bool = Field(False, description="torch.compile the model (pays off on long GPU runs)")
    num_workers: int = Field(0, ge=0, description="DataLoader workers for batching; 0: in the main process")
    resume: bool = Field(True, description="a checkpoint each epoch; a rerun after a crash resumes from the last one")
    augment: float | Literal["auto"] = Field(
        "auto", description="strength of the training-batch augmentation, 0 to 1; 0: off. images: random resized "
                            "crop, rotation, translation; text: each of augment_text_ops touches about 20% x "
                            "strength of a text's words. auto: the measured defaults: off for text, and off for "
                            "images but for augment_flip's flips")
    augment_text_ops: list[TextAugmentOp] = Field(
        ["mask"], min_length=1,
        description="text, when augment is above 0: mask replaces words by [MASK] ([UNK] without one), dropout "
                    "deletes words, span deletes a run of words, swap exchanges neighbouring words (mask alone: "
                    "the only set that cost no accuracy on 500 SST-2 rows)")
    augment_flip: bool = Field(
        True, description="images: random horizontal flips of training batches (turn off for digits and "
                          "characters, whose mirror image is another class)")
    eval_every_steps: int | None = Field(
        None, ge=1, description="also evaluate every N optimizer steps (null: at each epoch's end only); "
                                "patience and the pruner count evaluations")

    @model_validator(mode="after")
    def _strategy_needs(self):
        if self.strategy == "freeze_bottom" and self.freeze_layers < 1:
            raise ValueError("strategy freeze_bottom needs freeze_layers >= 1")
        if self.strategy != "freeze_bottom" and self.freeze_layers:
            raise ValueError(f"freeze_layers is set but strategy is {self.strategy!r}; use strategy: freeze_bottom")
        return self
