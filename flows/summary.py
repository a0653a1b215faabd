"""Pre-flight checks and the end-of-run summary of the pipeline CLI."""
from __future__ import annotations

import json

from mlcore.config import Config, profiles
from mlcore.data.tables import read_input
from mlcore.engine.device import resolve_device
from mlcore.models import modeling
from tasks import _paths as P


def check_inputs(cfg: Config) -> None:
    """Fail on a missing data file, column or checkpoint before any stage starts."""
    read_input(cfg.prepare)
    if cfg.pretrain.init_from:
        modeling.check_checkpoint(cfg.pretrain.init_from, "pretrain.init_from")


def summary(cfg: Config, results: dict) -> str:
    ran = [s for s, r in results.items() if not r.get("skipped")]
    skipped = [s for s, r in results.items() if r.get("skipped")]
    metrics = json.loads(P.METRICS.read_text()) if P.METRICS.exists() else {}
    reg = json.loads(P.REGISTRATION.read_text()) if P.REGISTRATION.exists() else {}
    lines = [
        "",
        "=" * 64,
        f"stages run: {', '.join(ran) or 'none'}"
        + (f"   up to date (skipped): {', '.join(skipped)}" if skipped else ""),
    ]
    lines.append(f"profile:    {profiles.effective(cfg, resolve_device(cfg.device()).type).describe()}")
    fine = json.loads(P.FINETUNE_REPORT.read_text()) if P.FINETUNE_REPORT.exists() else {}
    if "max_length" in fine:
        lines.append(f"max_length: {fine['max_length']} ({fine['max_length_setting']}): truncates "
                     f"{fine['truncated_pct']:.2f}% of the training texts")
    if metrics:
        lines.append(
            f"test: accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
            f"macro-P {metrics['macro_precision']:.4f}  macro-R {metrics['macro_recall']:.4f}  (n={metrics['n']})"
        )
    if reg:
        lines.append(f"registered: {reg['model_name']} version {reg['version']} -> alias @{reg['alias']}  "
                     f"({reg['metric']} {reg['value']:.4f}; previous champion: {reg['previous_champion_value']})")
        lines.append(f"load it:    mlflow.pyfunc.load_model('models:/{reg['model_name']}@champion')")
    lines += [
        f"MLflow UI:  make ui-mlflow   (or .venv/bin/mlflow ui --backend-store-uri {cfg.mlflow_uri()})",
        "Prefect UI: make ui-prefect  (then open http://127.0.0.1:4200)",
        "reports:    reports/ (metrics.json, confusion_matrix.png, ...);  .venv/bin/dvc metrics show",
        "=" * 64,
    ]
    return "\n".join(lines)
