"""Which format the registered model serves in (register.serve_format), checked before it is adopted.

A format other than torch fp32 is adopted only when its labels agree with torch fp32 on at least
AGREEMENT_BAR of the test rows, measured here, through the very pyfunc class consumers load.
A format that fails the check, or fails to build, leaves the model on torch, and the reason says
which and why. `auto` tries every format this CPU can run and adopts the one with the most rows/s that passes
(measured on the same test rows, one pass each); each format's latency for one input is reported
beside it, for services, which may rank the formats otherwise.

`decide` is the pure rule; `choose` builds the candidates (ONNX export, int8 quantization),
measures them and calls it. The chosen format's files go into the `serving` artifact the pyfunc
reads (serving_runtime.SERVING_FILE), beside the torch weights, which always ship.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from mlcore.models import serving_runtime

AGREEMENT_BAR = 0.995
GRAPHS = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    """One format measured on the test rows: its label agreement with torch fp32 and its speed,
    or why it could not be built or run."""
    agreement: float | None = None
    rows_per_s: float | None = None
    error: str | None = None
    one_input_ms: float | None = None  # median latency of one input alone: what a served request waits for


@dataclass(frozen=True)
class Choice:
    format: str  # the format served
    requested: str
    agreement: float  # of the served format's labels with torch fp32 on the test rows (torch: 1.0)
    reason: str
    trials: dict = field(default_factory=dict)  # format -> Trial, as measured (empty for torch)
    exporter: str | None = None  # which torch.onnx exporter made the graph, for an ONNX format

    def record(self) -> dict:
        return {"serve_format": self.format, "serve_format_requested": self.requested,
                "serve_agreement": self.agreement, "serve_reason": self.reason, "serve_exporter": self.exporter,
                "serve_trials": {k: asdict(v) for k, v in self.trials.items()}}


def decide(requested: str, trials: dict[str, Trial], bar: float = AGREEMENT_BAR) -> Choice:
    """The format to serve: the requested one when it passed the bar; for `auto` the fastest that
    passed; otherwise torch, saying why. `trials` holds torch's own (agreement 1) beside the rest."""
    def passed(name: str) -> bool:
        t = trials.get(name)
        return t is not None and t.error is None and t.agreement is not None and t.agreement >= bar

    if requested == "torch":
        return Choice("torch", requested, 1.0, "torch fp32, as requested", trials)
    if requested == "auto":
        ok = sorted((n for n in trials if passed(n)), key=lambda n: trials[n].rows_per_s or 0.0, reverse=True)
        best = ok[0] if ok else "torch"
        speeds = "; ".join(f"{n}: {_describe(t, bar)}" for n, t in trials.items())
        return Choice(best, requested, trials[best].agreement if best in trials else 1.0,
                      f"auto: {best} scores the most rows/s of the formats that agree on >= {bar:.1%} of the test "
                      f"labels ({speeds})", trials)
    if passed(requested):
        t = trials[requested]
        return Choice(requested, requested, t.agreement, f"{requested}: {t.agreement:.2%} of the test labels agree "
                      f"with torch fp32 (bar {bar:.1%})", trials)
    return Choice("torch", requested, 1.0, f"{requested} not used, torch fp32 serves instead: "
                  f"{_describe(trials.get(requested, Trial(error='not measured')), bar)}", trials)


def _describe(t: Trial, bar: float) -> str:
    if t.error:
        return f"failed ({t.error})"
    verdict = "passes" if t.agreement >= bar else f"below the {bar:.1%} bar"
    speed = f", {t.rows_per_s:.0f} rows/s" if t.rows_per_s else ""
    latency = f", {t.one_input_ms:.1f} ms for one input" if t.one_input_ms else ""
    return f"{t.agreement:.2%} label agreement ({verdict}){speed}{latency}"


def bf16_native() -> bool:
    from mlcore.engine import precision

    return bool(precision.cpu_bf16_flags(precision.read_cpu_flags()))


def candidates(requested: str, bf16_native: bool) -> tuple[str, ...]:
    """The formats to measure: the requested one, or for auto all of them (torch-bf16 only where
    the CPU has native bf16: emulated, it is slower than fp32)."""
    if requested == "torch":
        return ()
    if requested != "auto":
        return (requested,)
    return tuple(f for f in serving_runtime.FORMATS if f != "torch" and (f != "torch-bf16" or bf16_native))


def choose(requested: str, model_dir: Path, inputs: list[str] | pd.DataFrame, work: Path,
           bar: float = AGREEMENT_BAR) -> tuple[Choice, Path]:
    """Build and measure the candidates on `inputs` (the test rows: texts, or a frame of images),
    decide, and return the choice and the `serving` folder to ship with the model (its
    serving.json and graph)."""
    todo = candidates(requested, requested == "auto" and bf16_native())
    trials, exporter = {}, None
    if todo:
        clf = _classifier(model_dir)
        texts = clf._images(inputs) if isinstance(inputs, pd.DataFrame) else inputs  # what .logits takes
        seconds, reference = _timed(clf.logits, texts)
        trials["torch"] = Trial(1.0, len(texts) / seconds, one_input_ms=_one_input_ms(clf, texts))
        for name in todo:
            try:
                exporter = _build(name, clf, work, exporter)
                clf.load_format(str(work / name))
                if clf.served_format != name:
                    raise RuntimeError(clf.fallback_reason)
                seconds, logits = _timed(clf.logits, texts)
                agree = float(np.mean(logits.argmax(1).numpy() == reference.argmax(1).numpy()))
                trials[name] = Trial(agree, len(texts) / seconds, one_input_ms=_one_input_ms(clf, texts))
            except Exception as error:  # a format that cannot be built or run is not served: torch is
                log.warning("serve format %s failed: %s", name, error)
                trials[name] = Trial(error=f"{type(error).__name__}: {error}")
    choice = decide(requested, trials, bar)
    if choice.format.startswith("onnx"):
        choice = replace(choice, exporter=exporter)
    return choice, _serving_dir(choice.format, work)


def _classifier(model_dir: Path):
    """The pyfunc consumers load (text or image), on torch fp32."""
    # Imported here: importing a pyfunc file registers its model with MLflow (set_model), a side
    # effect that importing the register stage should not have.
    from mlcore.tracking import pyfunc_image_files

    if pyfunc_image_files.is_image_model(model_dir):
        from mlcore.tracking import pyfunc_image
        clf = pyfunc_image.ImageClassifierModel()
    else:
        from mlcore.tracking import pyfunc_model
        clf = pyfunc_model.TextClassifier()
    clf.load_context(SimpleNamespace(artifacts={"model_dir": str(model_dir)}))
    return clf


def _one_input_ms(clf, inputs, repeats: int = 15) -> float:
    """Median milliseconds to score the first input alone. Batch speed and one-request latency rank
    the formats differently (on a 2-core AMX CPU torch-bf16 scored the most rows/s, ONNX answered one
    text 2-3x sooner), so both are reported: batch jobs want the one, services the other."""
    one = inputs[:1]
    clf.logits(one)  # warm-up: a first call pays one-off costs
    return round(1000 * float(np.median([_timed(clf.logits, one)[0] for _ in range(repeats)])), 2)


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def _build(name: str, clf, work: Path, exporter: str | None) -> str | None:
    """The candidate's folder work/<name> with its serving.json (and graph); returns the exporter."""
    from mlcore.models import onnx_export

    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    if name.startswith("onnx"):
        fp32 = work / "onnx" / GRAPHS["onnx"]
        if not fp32.exists():
            c = clf.model.config
            exporter = (onnx_export.export_image(clf.model, fp32, c.channels, c.input_size)
                        if hasattr(c, "input_size") else onnx_export.export_text(clf.model, fp32))
        if name == "onnx-int8":
            onnx_export.quantize_int8(fp32, folder / GRAPHS[name])
    _write_spec(folder, name)
    return exporter


def _write_spec(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"format": name, "graph": GRAPHS.get(name)}
    (folder / serving_runtime.SERVING_FILE).write_text(json.dumps(spec, indent=2) + "\n")


def _serving_dir(name: str, work: Path) -> Path:
    """The chosen format's folder alone (the other candidates' graphs do not ship)."""
    return torch_dir(work) if name == "torch" else work / name


def torch_dir(work: Path) -> Path:
    """The `serving` folder of a model that serves torch fp32."""
    _write_spec(work / "torch", "torch")
    return work / "torch"
