"""Serving formats (register.serve_format): the ONNX export of the project's own forward, the int8
graph, the agreement rule that refuses a format below 99.5%, the pyfunc in each format, and its
fallback to torch when onnxruntime is missing or the graph is damaged."""
from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.models import infer_signature

from mlcore.config import ConfigError, parse_config
from mlcore.tracking import registry, serve_format
from mlcore.tracking.serve_format import Choice, Trial, decide
from tests.conftest import make_reviews

TEXTS = make_reviews(n=120)["text"].tolist()


@pytest.fixture(scope="module")
def tiny_classifier(tiny_base_dir, tmp_path_factory) -> Path:
    """A seeded, mean-pooled 2-label classifier on the tiny BERT: the pooling the graph must carry."""
    import torch

    from mlcore.models import modeling

    torch.manual_seed(1)
    model, tokenizer = modeling.load_classifier(tiny_base_dir, {"fresh": 0, "rotten": 1}, pooling="mean")
    return modeling.save(model, tokenizer, tmp_path_factory.mktemp("tiny_classifier"))


@pytest.fixture(scope="module")
def chosen(tiny_classifier, tmp_path_factory) -> tuple[Choice, Path]:
    """auto on the tiny classifier: every format built (the ONNX graph, its int8 form) and measured."""
    return serve_format.choose("auto", tiny_classifier, TEXTS, tmp_path_factory.mktemp("serving"))


def test_the_rule_adopts_a_passing_format_and_refuses_one_below_the_bar():
    trials = {"torch": Trial(1.0, 100.0), "onnx": Trial(1.0, 200.0), "onnx-int8": Trial(0.994, 400.0)}
    assert decide("onnx", trials).format == "onnx"
    refused = decide("onnx-int8", trials)
    assert (refused.format, refused.agreement) == ("torch", 1.0)
    assert "onnx-int8 not used" in refused.reason and "99.40%" in refused.reason and "99.5%" in refused.reason
    assert decide("auto", trials).format == "onnx"  # int8 is faster, but below the bar
    assert decide("auto", trials | {"onnx-int8": Trial(0.995, 400.0)}).format == "onnx-int8"  # the bar itself passes
    broken = decide("onnx", {"torch": Trial(1.0, 100.0), "onnx": Trial(error="ImportError: no onnxruntime")})
    assert broken.format == "torch" and "no onnxruntime" in broken.reason
    assert decide("torch", {}).format == "torch"


def test_a_bad_serve_format_is_one_config_error_naming_the_key():
    with pytest.raises(ConfigError) as err:
        parse_config({"register": {"serve_format": "onnx-fp16"}})
    message = str(err.value)
    assert "register.serve_format" in message and "onnx-int8" in message and "\n\n" not in message.strip()


def test_the_graph_carries_the_projects_forward_and_auto_measures_every_format(chosen, tiny_classifier):
    import onnx
    import onnxruntime

    choice, folder = chosen
    # which format wins is a timing (on the tiny model torch often does); the exporter is named
    # when an ONNX format serves
    assert choice.exporter in (("dynamo", "torchscript") if choice.format.startswith("onnx") else (None,))
    assert {"torch", "onnx", "onnx-int8"} <= set(choice.trials)
    assert all(t.error is None for t in choice.trials.values()), choice.trials
    assert choice.trials["onnx"].agreement == 1.0  # fp32 graph: the same labels as torch
    # both speeds, as batch jobs and services see them, each format's in the reason auto gives
    assert all(t.rows_per_s > 0 and t.one_input_ms > 0 for t in choice.trials.values()), choice.trials
    assert choice.reason.count("ms for one input") == len(choice.trials)
    assert choice.format in choice.trials and choice.agreement >= serve_format.AGREEMENT_BAR
    graph = onnx.load(str(folder.parent / "onnx" / "model.onnx"))
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert all(isinstance(d, str) for dims in inputs.values() for d in dims)  # dynamic batch and sequence
    # Mean pooling: the graph reads no pooler weights, and the masked mean divides by the token count.
    assert not any("pooler" in w.name for w in graph.graph.initializer)
    assert any(n.op_type == "ReduceSum" for n in graph.graph.node)
    int8 = onnxruntime.InferenceSession(str(folder.parent / "onnx-int8" / "model.int8.onnx"))
    assert any("MatMulInteger" in n.op_type or "DynamicQuantize" in n.op_type
               for n in onnx.load(int8._model_path).graph.node)  # quantized


@pytest.mark.parametrize("fmt", ["torch", "torch-bf16", "onnx", "onnx-int8"])
def test_the_logged_pyfunc_serves_each_format_with_the_torch_labels(fmt, chosen, tiny_classifier, tmp_path):
    _, folder = chosen
    serving = folder.parent / fmt
    if fmt == "torch":
        serving = serve_format.torch_dir(tmp_path)
    elif fmt == "torch-bf16":
        serve_format._write_spec(serving, fmt)
    path = tmp_path / "model"
    frame = pd.DataFrame({"text": TEXTS})
    # As registry.log_classifier logs it, less the run: requirements given (inferring them costs seconds).
    signature = infer_signature(frame[:2], pd.Series(["fresh", "fresh"]), params={"return_scores": False})
    mlflow.pyfunc.save_model(str(path), python_model=str(registry.PYFUNC_CODE), code_paths=registry.TEXT_CODE_PATHS,
                             artifacts={"model_dir": str(tiny_classifier), "serving": str(serving)},
                             signature=signature, pip_requirements=["torch"])
    shipped = {f.name for f in (path / "code").iterdir()}
    assert {"classifier_pooling.py", "serving_runtime.py"} <= shipped  # it stands alone
    loaded = mlflow.pyfunc.load_model(str(path))
    clf = loaded.unwrap_python_model()
    assert (clf.served_format, clf.fallback_reason) == (fmt, None)
    labels = loaded.predict(frame).tolist()
    clf.load_format(None)  # the same loaded model, on torch fp32
    reference = loaded.predict(frame).tolist()
    agree = sum(a == b for a, b in zip(labels, reference, strict=True)) / len(labels)
    assert agree >= (1.0 if fmt in ("torch", "onnx") else 0.95)
    scores = loaded.predict(frame[:3], params={"return_scores": True})
    assert list(scores.columns) == ["label", "score_fresh", "score_rotten"]


def test_without_onnxruntime_or_with_a_damaged_graph_it_serves_torch_and_says_why(chosen, tiny_classifier,
                                                                                 monkeypatch, caplog):
    _, folder = chosen
    clf = serve_format._classifier(tiny_classifier)
    reference = clf.logits(TEXTS[:8])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    clf.load_format(str(folder.parent / "onnx"))
    assert clf.served_format == "torch" and "onnxruntime cannot be imported" in clf.fallback_reason
    assert "serving torch fp32 instead of onnx" in caplog.text
    assert (clf.logits(TEXTS[:8]) == reference).all()
    monkeypatch.delitem(sys.modules, "onnxruntime")
    damaged = folder.parent / "damaged"
    serve_format._write_spec(damaged, "onnx")
    (damaged / "model.onnx").write_bytes(b"not a graph")
    clf.load_format(str(damaged))
    assert clf.served_format == "torch" and "model.onnx failed to load" in clf.fallback_reason


def test_an_image_model_is_exported_checked_and_served_in_onnx(tmp_path):
    """The image pyfunc, same pattern: the graph takes `pixels`, auto measures it, the model serves it."""
    from mlcore.modality.image import png_bytes
    from mlcore.models import vision
    from mlcore.tracking import pyfunc_image_files
    from tests.test_vision import squares, tiny_resnet

    model_dir = vision.save(tiny_resnet(), tmp_path / "classifier")
    frame = pd.DataFrame({"image": [png_bytes(p) for p in squares(24, seed=3).pixels]})
    choice, folder = serve_format.choose("onnx", model_dir, frame, tmp_path / "serving")
    assert choice.format == "onnx" and choice.trials["onnx"].agreement == 1.0, choice.reason
    assert choice.trials["onnx"].one_input_ms > 0
    path = tmp_path / "model"
    mlflow.pyfunc.save_model(str(path), python_model=str(pyfunc_image_files.CODE),
                             code_paths=pyfunc_image_files.code_paths(), pip_requirements=["torch"],
                             artifacts={"model_dir": str(model_dir), "serving": str(folder)})
    loaded = mlflow.pyfunc.load_model(str(path))
    assert loaded.unwrap_python_model().served_format == "onnx"
    served = loaded.predict(frame).tolist()
    loaded.unwrap_python_model().load_format(None)
    assert served == loaded.predict(frame).tolist()
