"""Feed-forward pruning for a narrower student: which units stay, that the pruned model computes
exactly what the full one does without the dropped units, and that it saves and loads as a plain model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from mlcore.engine.batching import Encoded
from mlcore.errors import UserError
from mlcore.models import pruning
from mlcore.models.distillation import make_student


def _bert(layers: int = 2, ffn: int = 32) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=ffn, max_position_embeddings=16, num_labels=3,
                        attn_implementation="sdpa")
    return BertForSequenceClassification(config).eval()


def _texts(n: int = 6) -> Encoded:
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(1, 50, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]
    return Encoded(rows, None)


def _states(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model.bert(input_ids=torch.tensor([ids])).last_hidden_state


@pytest.mark.parametrize("fraction, full, expected", [(None, 1536, 1536), (0.5, 1536, 768), (1 / 3, 1536, 512),
                                                      (1.0, 32, 32), (0.001, 32, 1)])
def test_kept_units(fraction, full, expected):
    assert pruning.kept_units(fraction, full) == expected


def test_the_pruned_model_is_the_full_one_without_the_dropped_units():
    model = _bert()
    scores = [torch.arange(32, dtype=torch.float) for _ in range(2)]  # units 24-31 score highest
    full = _bert()
    with torch.no_grad():
        for layer in full.bert.encoder.layer:
            layer.output.dense.weight[:, :24] = 0  # what dropping units 0-23 takes out
    pruning.prune_ffn(model, 8, scores)
    assert model.config.intermediate_size == 8
    assert [(up.out_features, down.in_features) for up, down in pruning.ffn_blocks(model)] == [(8, 8), (8, 8)]
    ids = _texts(1).input_ids[0]
    assert torch.allclose(_states(model, ids), _states(full, ids), atol=1e-5)
    assert not torch.allclose(_states(model, ids), _states(_bert(), ids), atol=1e-2)


def test_importance_counts_real_tokens_only_and_a_silent_unit_scores_zero():
    model, teacher = _bert(), _bert(layers=3)
    with torch.no_grad():
        model.bert.encoder.layer[0].output.dense.weight[:, 5] = 0  # unit 5 of layer 0 writes nothing
    texts = _texts()
    one_by_one = pruning.importance(model, [teacher], texts, pad_id=0, batch_size=1)
    padded = pruning.importance(model, [teacher], texts, pad_id=0, batch_size=6)  # rows of unequal length padded
    for a, b in zip(one_by_one, padded, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-12)
    assert one_by_one[0][5] == 0 and (one_by_one[0] > 0).sum() == 31
    assert model.training is False and all(p.grad is None for p in model.parameters())


def test_a_large_split_is_ranked_on_a_fixed_sample_spread_over_it():
    picked = pruning.ranking_rows(10 * pruning.SAMPLE_ROWS)
    assert len(picked) == pruning.SAMPLE_ROWS and (np.diff(picked) > 0).all()
    assert picked[-1] > 9 * pruning.SAMPLE_ROWS  # not the first rows only: a label-sorted split is covered
    assert (pruning.ranking_rows(10 * pruning.SAMPLE_ROWS) == picked).all()
    assert (pruning.ranking_rows(5) == np.arange(5)).all()


def test_a_student_equal_to_its_teacher_is_ranked_by_the_labels():
    model = _bert()
    unlabelled = pruning.importance(model, [_bert()], _texts(), pad_id=0)  # no KL to lose: (rounding) zeros
    labelled = pruning.importance(model, [_bert()], Encoded(_texts().input_ids, np.array([0, 1, 2, 0, 1, 2])),
                                  pad_id=0)
    for without, with_labels in zip(unlabelled, labelled, strict=True):
        assert float(without.sum()) < 1e-4 * float(with_labels.sum())


def test_a_narrow_student_saves_and_loads_as_a_plain_model(tmp_path):
    teacher = _bert(layers=4)
    student = make_student(teacher, [0, 2], 0.25, _texts(), pad_id=0)
    assert student.config.num_hidden_layers == 2 and student.config.intermediate_size == 8
    assert teacher.config.intermediate_size == 32  # the teacher is left as it was
    student.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = _texts(1).input_ids[0]
    assert torch.allclose(_states(loaded, ids), _states(student.eval(), ids), atol=1e-6)


def test_a_model_without_bert_feed_forward_blocks_is_a_user_error():
    class Plain(torch.nn.Module):
        base_model = torch.nn.Linear(2, 2)

    with pytest.raises(UserError, match=r"student_ffn: null"):
        pruning.ffn_blocks(Plain())


def test_more_units_than_the_teacher_has_is_a_user_error():
    with pytest.raises(UserError, match="keeps 40 feed-forward units.*have 32"):
        pruning.prune_ffn(_bert(), 40, [torch.ones(32)] * 2)
