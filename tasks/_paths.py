"""Where each stage reads and writes, relative to the project root: declared here once.

dvc.yaml declares the same outputs; tests/test_structure.py checks that `OUTS` matches it."""
from pathlib import Path

SPLITS = Path("data/processed/prepare")
TRAIN, VAL, TEST = SPLITS / "train.parquet", SPLITS / "val.parquet", SPLITS / "test.parquet"
UNLABELLED = SPLITS / "unlabelled.parquet"
LABEL_MAP = SPLITS / "label_map.json"

PRETRAINED = Path("models/pretrained")
SEARCH = Path("data/processed/search")
BEST_PARAMS = SEARCH / "best_params.json"
BEST_TRIAL_MODEL = SEARCH / "best_model"  # the best trial's classifier at its best epoch
TRIAL_MODELS = Path("optuna/models")  # the study's best so far, kept across reruns (outside DVC's outs)
OPTUNA_DIR = Path("optuna")
CLASSIFIER = Path("models/classifier")
STUDENT = Path("models/student")  # the distilled student (distill.enabled), else a note that distill is off

# Resumable training state, one directory per stage (not a DVC output: DVC deletes
# outputs before a stage runs, and these must survive a crash to be resumed from).
CHECKPOINTS = Path(".checkpoints")

REPORTS = Path("reports")
DATA_REPORT = REPORTS / "data_report.json"
PRETRAIN_REPORT = REPORTS / "pretrain.json"
PRETRAIN_HISTORY = REPORTS / "pretrain_history.csv"
SEARCH_TRIALS = REPORTS / "search_trials.csv"
FINETUNE_REPORT = REPORTS / "finetune.json"
FINETUNE_HISTORY = REPORTS / "finetune_history.csv"
DISTILL_REPORT = REPORTS / "distill.json"
METRICS = REPORTS / "metrics.json"
CONFUSION_JSON = REPORTS / "confusion_matrix.json"
CONFUSION_PNG = REPORTS / "confusion_matrix.png"
PREDICTIONS = REPORTS / "test_predictions.csv"
REGISTRATION = REPORTS / "registration.json"
MODEL_CARD = REPORTS / "MODEL_CARD.md"  # also inside the registered model, and its first paragraph its description

# What each stage writes: dvc.yaml's outs, metrics and plots of that stage, exactly.
OUTS = {
    "prepare": [SPLITS, DATA_REPORT],
    "pretrain": [PRETRAINED, PRETRAIN_REPORT, PRETRAIN_HISTORY],
    "search": [SEARCH, SEARCH_TRIALS],
    "finetune": [CLASSIFIER, FINETUNE_REPORT, FINETUNE_HISTORY],
    "distill": [STUDENT, DISTILL_REPORT],
    "evaluate": [METRICS, CONFUSION_JSON, CONFUSION_PNG, PREDICTIONS],
    "register": [REGISTRATION, MODEL_CARD],
}
