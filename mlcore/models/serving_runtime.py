"""Which serving format a logged model runs, and its ONNX Runtime session: the part of serving that
both pyfuncs (pyfunc_model.py for text, pyfunc_image.py for images) share.

It imports the standard library only (onnxruntime when a graph is loaded), because it ships inside
every logged model (MLflow `code_paths`; beside pyfunc_model, and in the image model's package).
register writes the `serving` artifact (mlcore/tracking/serve_format.py): a folder with
SERVING_FILE, {"format": ..., "graph": <file name> | null}, and the graph when there is one.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

FORMATS = ("torch", "torch-bf16", "onnx", "onnx-int8")
SERVING_FILE = "serving.json"
# Set before loading, it makes a model serve torch whatever register chose (torch or torch-bf16).
FORMAT_ENV = "CLASSIFIER_SERVE_FORMAT"
log = logging.getLogger("classifier_serving")


def serving_choice(serving_dir: str | None) -> tuple[str, Path | None]:
    """(format, ONNX graph or None) from the `serving` artifact; none (a model registered before
    serving formats existed): torch. FORMAT_ENV overrides it with a torch format."""
    spec = json.loads((Path(serving_dir) / SERVING_FILE).read_text()) if serving_dir else {}
    fmt, graph = spec.get("format", "torch"), spec.get("graph")
    forced = os.environ.get(FORMAT_ENV, "").strip().lower()
    if forced:
        if forced not in ("torch", "torch-bf16"):
            raise ValueError(f"${FORMAT_ENV} is {forced!r}; use torch or torch-bf16, or leave it unset")
        return forced, None
    if fmt not in FORMATS:
        raise ValueError(f"{SERVING_FILE}: format {fmt!r} is not one of {FORMATS}")
    return fmt, (Path(serving_dir) / graph) if graph else None


def onnx_session(graph: Path):
    """(an ONNX Runtime session on `graph` on the CPU, None), or (None, why there is none)."""
    try:
        import onnxruntime
    except ImportError as error:
        return None, f"onnxruntime cannot be imported ({error})"
    try:
        return onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"]), None
    except Exception as error:  # a missing, damaged or unsupported graph: torch still serves
        return None, f"{graph.name} failed to load in onnxruntime {onnxruntime.__version__} ({error})"


def load(serving_dir: str | None) -> tuple[str, object, str | None]:
    """(format served, session or None, fallback reason or None): an ONNX format that cannot run
    falls back to torch fp32, logged with the reason."""
    fmt, graph = serving_choice(serving_dir)
    if graph is None:
        return fmt, None, None
    session, reason = onnx_session(graph)
    if session is None:
        log.warning("serving torch fp32 instead of %s: %s", fmt, reason)
        return "torch", None, reason
    return fmt, session, None
