"""register: log the classifier to MLflow as a pyfunc model with its model card and lineage, register a
new version, and point `champion` at it when it beats the TF-IDF baseline's test metric
(register.require_beat_baseline) and the current champion, re-scored on this run's test rows, by
register.min_delta (otherwise `challenger`; the version's `gate.reason` tag says why). Every move
of `champion` is appended to the registered model's audit record. When the distill stage trained a
student, register.candidate says which of the two is registered (auto: the student when its
validation macro-F1 is within register.max_student_drop of the teacher's)."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from mlcore import modality
from mlcore.config import Config
from mlcore.data.hashing import files_digest
from mlcore.errors import UserError
from mlcore.models import distillation
from mlcore.plots import confusion_matrix_png
from mlcore.tracking import audit, lineage, model_card, registration, runs
from mlcore.tracking.tags import NOTE_TAG, REASON_TAG
from tasks import _dvc_state, _io
from tasks import _paths as P
from tasks._context import StageContext
from tasks._runner import as_task, cli

STAGE = "register"


def run(ctx: StageContext) -> dict:
    cfg, parent_run_id = ctx.cfg, ctx.parent_run_id
    r = cfg.register
    metrics = _io.read_json(P.METRICS, "evaluate")
    _baseline_value(metrics, r.metric, r.require_beat_baseline)
    label2id = _io.label_map()
    labels = sorted(label2id, key=label2id.get)
    splits = {name: _io.read_split(path) for name, path in (("train", P.TRAIN), ("val", P.VAL), ("test", P.TEST))}
    candidate, metrics, classifier, facts = _candidate(r, metrics)
    kind = modality.of_splits(P.TEST)
    digest = _source_digest(classifier, metrics)
    card = _card_inputs(cfg, metrics, labels, kind.card_facts(classifier) | facts)
    with runs.stage_run(cfg, STAGE, parent_run_id) as active, tempfile.TemporaryDirectory() as tmp:
        confusion = _confusion_png(metrics, labels, Path(tmp))
        runs.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        runs.log_datasets(splits, P.SPLITS, also_run_id=parent_run_id)
        made_from = lineage.version_lineage(cfg, pipeline_run_id=parent_run_id, pretrain=card.pretrain,
                                            finetune=card.finetune, best=card.best, test_digest=card.test_digest)
        record, text = registration.register(registration.Request(
            r.model_name, r.metric, r.min_delta, r.require_beat_baseline, classifier, digest,
            kind.model_inputs(splits["test"]), splits["test"]["label"].tolist(), card, made_from, confusion,
            audit.actor(f"register stage, pipeline run {parent_run_id or 'none (dvc repro)'}"),
            _training_params(cfg, card.finetune, candidate), r.serve_format))
        # Only now: MLflow copies the run's params into the logged model's, which are its training settings.
        runs.log_params(r.model_dump())
        record["run_id"] = active.info.run_id
        runs.set_tags({"registered.version": record["version"], "registered.alias": record["alias"],
                       "registered.candidate": candidate,
                       REASON_TAG: record["reason"], NOTE_TAG: model_card.first_paragraph(text)})
        _io.write_text(P.MODEL_CARD, text)
        _io.write_json(P.REGISTRATION, record)
    print(f"register: {r.model_name} version {record['version']} -> @{record['alias']} ({record['reason']})")
    return {"version": record["version"], "alias": record["alias"]}


def _candidate(r, metrics: dict) -> tuple[str, dict, Path, dict]:
    """Teacher or student (register.candidate, on validation scores): its name, test report, folder,
    and what the card says of the choice."""
    distilled = _io.read_json(P.DISTILL_REPORT, "distill") if P.DISTILL_REPORT.exists() else {"enabled": False}
    candidate, why = distillation.choose_candidate(r.candidate, distilled, r.max_student_drop)
    print(f"register: candidate {candidate}: {why}")
    folder = _io.require(P.STUDENT, "distill") if candidate == "student" else _io.require(P.CLASSIFIER, "finetune")
    facts = {"candidate": candidate, "candidate_reason": why, "distill": distilled}
    return candidate, _candidate_metrics(metrics, candidate), folder, facts


def _candidate_metrics(metrics: dict, candidate: str) -> dict:
    """The registered model's test report: evaluate's, or its student's beside the same baseline."""
    if candidate == "teacher":
        return {k: v for k, v in metrics.items() if k != "student"}
    if "student" not in metrics:
        raise UserError(f"{P.METRICS}: no `student` report, though the distill stage trained a student: evaluate "
                        f"ran before it. Rerun it (`dvc repro evaluate`), or set register.candidate: teacher.")
    return metrics["student"] | {k: v for k, v in metrics.items() if k.startswith("baseline_")}


def _source_digest(folder: Path, metrics: dict) -> str:
    """What the version is made from: the weights and the candidate's test metrics, not config.json, which
    carries training-time timings. The metrics are hashed as evaluate writes them, so a teacher gets the
    digest it had before a student's report joined metrics.json, and a rerun finds its version."""
    with tempfile.TemporaryDirectory() as tmp:
        written = Path(tmp) / P.METRICS.name
        _io.write_json(written, metrics)
        return files_digest([*sorted(folder.glob("*.safetensors")), written])


def _confusion_png(metrics: dict, labels: list[str], tmp: Path) -> Path:
    """evaluate's image for the teacher; the student's is drawn from its report."""
    if "confusion_matrix" not in metrics:
        return P.CONFUSION_PNG
    path = tmp / P.CONFUSION_PNG.name
    confusion_matrix_png(metrics.pop("confusion_matrix")["matrix"], labels, path)
    return path


def _card_inputs(cfg: Config, metrics: dict, labels: list[str], facts: dict) -> model_card.CardInputs:
    """The model card's inputs: every report the earlier stages wrote, and the modality's own facts."""
    return model_card.CardInputs(
        name=cfg.register.model_name, labels=labels, metric=cfg.register.metric, decision={}, metrics=metrics,
        data_report=_io.read_json(P.DATA_REPORT, "prepare"), finetune=_io.read_json(P.FINETUNE_REPORT, "finetune"),
        pretrain=_io.read_json(P.PRETRAIN_REPORT, "pretrain"), best=_io.read_json(P.BEST_PARAMS, "search"),
        source=cfg.prepare.input, source_md5=runs.raw_data_hash(cfg.prepare.input), checkpoint=cfg.pretrain.init_from,
        test_digest=files_digest([P.TEST]), extra=facts)


def _training_params(cfg: Config, finetune: dict, candidate: str) -> dict:
    """What the model was trained with: the finetune settings, with the learning rate and optimizer
    it used (the search's pick, unless set) and how its training went; a student adds distill's."""
    used = {k: finetune[k] for k in ("learning_rate", "optimizer", "epochs_run", "best_epoch", "trained_on",
                                     "max_length", "precision", "device") if k in finetune}
    distilled = _flat(cfg.distill.model_dump(), "distill.") if candidate == "student" else {}
    return _flat(cfg.finetune.model_dump()) | used | distilled


def _flat(settings: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in settings.items():
        flat |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat


def _baseline_value(metrics: dict, metric: str, required: bool) -> float | None:
    key = f"baseline_{metric}"
    if key not in metrics and required:
        raise UserError(f"{P.METRICS}: no `{key}`, which register.require_beat_baseline needs. It is written by "
                        f"the `evaluate` stage since it scores the TF-IDF baseline: rerun it (`dvc repro evaluate`), "
                        f"or set register.require_beat_baseline: false in params.yaml.")
    return metrics.get(key)


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run, _dvc_state.registry_changes)  # rerun when the store lacks the version

if __name__ == "__main__":
    sys.exit(main())
