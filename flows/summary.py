"""Pre-flight checks and the end-of-run summary of the pipeline CLI."""
from __future__ import annotations

import json
import sys

from mlcore.config import Config, profiles
from mlcore.config.environment import redact
from mlcore.engine.device import resolve_device
from mlcore.tracking.model_card import describe_gap, describe_numerics, narrower
from mlcore.tracking.store import holds, is_server, resolve_store
from tasks import _paths as P


def check_inputs(cfg: Config, data: bool = True) -> None:
    """Fail on bad data (unreadable, wrong columns, too small to split) or a bad checkpoint
    before any stage starts, and so before Prefect starts its server. `data`: prepare will run;
    its splits are kept for it (tasks/_prepared.py). When prepare is up to date, its data was
    checked when it last ran."""
    from mlcore.data.images import detect_modality
    from tasks import _prepared

    if data:
        _prepared.compute_and_keep(cfg.prepare)
    if detect_modality(cfg.prepare)[0] == "image":
        from mlcore.models.vision import start

        start.check_init_from(cfg.pretrain.init_from)
    elif cfg.pretrain.init_from:
        from mlcore.models import modeling  # transformers: imported only when a run will need it

        modeling.check_masked_lm_checkpoint(cfg.pretrain.init_from, "pretrain.init_from")


def _baseline_name() -> str:
    """The simple model the gate compares against, as the model card names it."""
    from mlcore import modality

    images = P.TEST.exists() and modality.name_of_splits(P.TEST) == "image"
    return "pixel baseline (logistic regression)" if images else "TF-IDF baseline"


def duration(seconds: float) -> str:
    """12 s, 3 min 08 s."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


Fact = tuple[str, str]  # (what, its value): a line of the printed summary, a row of the run's artifact
ARTIFACT_KEY = "training-summary"  # one key: Prefect keeps each run's version under it, newest first


def facts(cfg: Config, results: dict) -> list[Fact]:
    """What a run did and where its model stands, from the stage results and the reports on disk."""
    ran = [s + (f" ({duration(r['seconds'])})" if "seconds" in r else "") for s, r in results.items()
           if not r.get("skipped")]
    skipped = [s for s, r in results.items() if r.get("skipped")]
    metrics = json.loads(P.METRICS.read_text()) if P.METRICS.exists() else {}
    reg = json.loads(P.REGISTRATION.read_text()) if P.REGISTRATION.exists() else {}
    found = [("stages run", (", ".join(ran) or "none")
              + (f"   up to date (skipped): {', '.join(skipped)}" if skipped else ""))]
    found.append(("profile", profiles.effective(cfg, resolve_device(cfg.device()).type).describe()))
    fine = json.loads(P.FINETUNE_REPORT.read_text()) if P.FINETUNE_REPORT.exists() else {}
    if "max_length" in fine:
        found.append(("max_length", f"{fine['max_length']} ({fine['max_length_setting']}): truncates "
                                    f"{fine['truncated_pct']:.2f}% of the training texts"))
    if "numerics" in fine:  # what a rerun must match to give the same weights bit for bit
        found.append(("numerics", describe_numerics(fine["numerics"])))
    if metrics:
        found.append(("test", f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
                              f"macro-P {metrics['macro_precision']:.4f}  macro-R {metrics['macro_recall']:.4f}  "
                              f"(n={metrics['n']})" + _baseline_text(metrics)))
    distilled = json.loads(P.DISTILL_REPORT.read_text()) if P.DISTILL_REPORT.exists() else {}
    if distilled.get("enabled") and "student" in metrics:
        found.append(("student", _student_text(distilled, metrics["student"])))
    if "ece" in metrics:
        found.append(("calibrated", f"temperature {metrics['temperature']:.3f}: test ECE "
                                    f"{metrics['ece_uncalibrated']:.4f} -> {metrics['ece']:.4f}"))
    store = resolve_store(cfg)
    if reg:
        found += _registration_facts(reg, store)
    return found + [
        ("MLflow UI", _mlflow_ui(cfg, store)),
        ("Prefect UI", "make ui-prefect  (then open http://127.0.0.1:4200)"),
        ("reports", "reports/ (MODEL_CARD.md, metrics.json, confusion_matrix.png, ...);  .venv/bin/dvc metrics show"),
    ]


def _student_text(distilled: dict, student: dict) -> str:
    """The distilled student beside the teacher (test is reported only; register chose on validation)."""
    return (f"{distilled['student_layers']} of {distilled['teacher_layers']} layers{narrower(distilled)}, "
            f"{distilled['speedup']:.2f}x the "
            f"teacher's rows/s: test accuracy {student['accuracy']:.4f}  macro-F1 {student['macro_f1']:.4f}; "
            f"validation macro-F1 {describe_gap(distilled['val_macro_f1_drop'])}")


def _mlflow_ui(cfg: Config, store: str) -> str:
    """How to open the runs: the link that shows them as model training in the pipeline's view, when
    MLflow is loaded already (the flow ran; its id is one query away). The quick no-op path does
    not load MLflow for it: `make ui-mlflow` prints the same link."""
    server = is_server(store)
    how = f"{redact(store)} (a tracking server)" if server else "make ui-mlflow (it prints the link)"
    if "mlflow" not in sys.modules or store.startswith("databricks"):
        return how
    from mlcore.tracking import ui

    base = redact(store) if server else ui.LOCAL_UI
    try:
        link = ui.links(store, {cfg.tracking.experiment: ui.training(cfg.register.metric)}, base)[0]
    except Exception:  # noqa: BLE001 - the summary of a finished run never fails on a link
        return how
    return f"{link.split()[0]}  | {how}"  # a row each in the artifact


def summary(cfg: Config, results: dict) -> str:
    """The facts as the command line prints them at the end of a run."""
    lines = [f"{what + ':':<12}{value}" for what, value in facts(cfg, results)]
    return "\n".join(["", "=" * 64, *lines, "=" * 64])


def markdown(cfg: Config, results: dict) -> str:
    """The same facts as a Markdown table, for the run's Prefect artifact. A printed line's parts
    (the test metrics | the baseline's) get a row each: the UI does not wrap a long cell."""
    rows = []
    for what, value in facts(cfg, results):
        first, *more = value.split("  | ")
        rows += [f"| **{what}** | {_cell(first)} |", *(f"| | {_cell(part)} |" for part in more)]
    return "\n".join(["## Training pipeline run", "", "| | |", "|---|---|", *rows])


def _cell(text: str) -> str:
    return text.replace("|", r"\|")  # a bare | would end the table cell


def publish(cfg: Config, results: dict) -> None:
    """End the flow run with its summary as a Prefect artifact, so the UI shows the result, not
    only the logs. Prefect is imported here: the command line imports this module without it."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown(cfg, results), key=ARTIFACT_KEY,
                             description="Test metrics, the baseline, the gate's decision and the registered version")


def _registration_facts(reg: dict, store: str) -> list[Fact]:
    """What register recorded, once the store MLflow points at now is checked for that version:
    after a switch to another store, the record describes a registration that store does not hold."""
    name, version = reg["model_name"], str(reg["version"])
    held = holds(store, name, version, reg.get("source_digest"))
    if held is False:
        return [("registered", f"nothing in the MLflow store {redact(store)}: {P.REGISTRATION} names {name} "
                               f"version {version}, which that store does not hold (registered in another store?)"),
                ("register", "`make run` registers it there, or `.venv/bin/dvc repro -f -s register`")]
    checked = "" if held else f"  [not checked: the MLflow store {redact(store)} did not answer]"
    found = [("registered", f"{name} version {version} -> alias @{reg['alias']}  "
                            f"({reg['metric']} {reg['value']:.4f}; {_champion_text(reg)}){checked}")]
    if reg.get("reason"):
        found.append(("why", reg["reason"]))
    if reg["alias"] == "champion" or reg.get("previous_champion_version"):
        found.append(("load it", f"mlflow.pyfunc.load_model('models:/{name}@champion')"))
    else:
        found.append(("load it", f"no champion yet; this version is "
                                 f"mlflow.pyfunc.load_model('models:/{name}@{reg['alias']}')"))
    return found


def _baseline_text(metrics: dict) -> str:
    """'  | TF-IDF baseline: accuracy 0.7850 (model -0.0360)  macro-F1 0.7770 (model -0.0330)', or ''."""
    if "baseline_accuracy" not in metrics:
        return ""
    parts = [f"{name} {metrics[f'baseline_{key}']:.4f} (model {metrics[key] - metrics[f'baseline_{key}']:+.4f})"
             for key, name in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))]
    return f"  | {_baseline_name()}: " + "  ".join(parts)


def _champion_text(reg: dict) -> str:
    """How the previous champion did on the same test rows (or why it was not compared)."""
    version = reg.get("champion_version", reg.get("previous_champion_version"))
    if version is None:
        return "no previous champion"
    if version == reg["version"]:
        return "already the champion"
    if reg.get("champion_value") is not None:
        return f"champion version {version} on the same test rows: {reg['champion_value']:.4f}"
    if reg.get("champion_unscored_reason"):
        return f"champion version {version} not compared: {reg['champion_unscored_reason']}"
    return f"previous champion: {reg.get('previous_champion_value')}"
