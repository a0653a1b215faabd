"""Structured pruning of a BERT-style encoder's feed-forward units, for a student narrower than its
teacher.

Cutting layers alone cannot make a MiniLM student 3x faster within 1.5 points (docs/benchmarks.md:
each layer costs the same, and two layers already lose 3 points). The feed-forward block is most of a
layer's time at short sequence lengths, so the student keeps its layers' most important units instead.
A unit's importance is a first-order estimate of what removing it costs the distillation loss, on the
training texts. Ranking by that beat ranking by mean activation times output-weight norm by 1.0 point of
SST-2 test accuracy for the same student (docs/benchmarks.md). Every layer keeps the same number of
units, so the result is a plain model whose config says so (`intermediate_size`) and which saves,
loads and exports like any other.
"""
from __future__ import annotations

import numpy as np
import torch

from mlcore.engine.batching import Encoded, collate
from mlcore.errors import UserError
from mlcore.models import classifier_pooling

SAMPLE_ROWS = 2048  # texts that rank the units: enough for a stable ranking; more only costs time


def ffn_blocks(model) -> list[tuple[torch.nn.Linear, torch.nn.Linear]]:
    """(up projection, down projection) of each encoder layer's feed-forward block, bottom first."""
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if layers is None or not all(hasattr(x, "intermediate") and hasattr(x, "output") for x in layers):
        raise UserError(f"distill.student_ffn: the teacher ({type(model).__name__}) is not a BERT-style encoder "
                        f"(encoder.layer[i].intermediate / .output), so its feed-forward units cannot be pruned. "
                        f"Set distill.student_ffn: null.")
    return [(x.intermediate.dense, x.output.dense) for x in layers]


def kept_units(fraction: float | None, full: int) -> int:
    """How many of `full` feed-forward units each student layer keeps: null keeps all."""
    return full if fraction is None else max(1, round(fraction * full))


def importance(model, teachers: list, data: Encoded, pad_id: int, batch_size: int = 32) -> list[torch.Tensor]:
    """Per layer, each feed-forward unit's first-order estimate of how much the loss would grow without it:
    |sum over real tokens of activation x gradient|, summed over texts (Molchanov et al. 2019). The loss
    is the KL to the teachers' mean logits plus, where `data` has labels, the cross-entropy. The model is
    left as it was, gradients cleared."""
    blocks, seen = ffn_blocks(model), {}
    totals = [torch.zeros(up.out_features) for up, _ in blocks]

    def keep(i):
        def record(module, args, out):  # out: the activated units, (batch, tokens, units)
            out.retain_grad()
            seen[i] = out
        return record

    handles = [layer.intermediate.register_forward_hook(keep(i))
               for i, layer in enumerate(model.base_model.encoder.layer)]
    was_training, device = model.training, next(model.parameters()).device
    model.eval()  # no dropout: the ranking is of the model as it will start
    try:
        picked = ranking_rows(len(data.input_ids))
        rows = [data.input_ids[i] for i in picked]
        for start in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[start:start + batch_size], pad_id).items()}
            with torch.no_grad():
                target = torch.stack([classifier_pooling.logits(t.to(device), **batch).float()
                                      for t in teachers]).mean(0)
            with torch.enable_grad():  # summed, not averaged: a text counts the same in any batch
                logits = classifier_pooling.logits(model, **batch).float()
                loss = torch.nn.functional.kl_div(torch.log_softmax(logits, -1), torch.log_softmax(target, -1),
                                                  reduction="sum", log_target=True)
                if data.labels is not None:  # a student equal to its teacher still has the labels to rank by
                    labels = torch.as_tensor(data.labels[picked[start:start + batch_size]], device=device)
                    loss = loss + torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
                loss.backward()
            real = batch["attention_mask"][..., None].float()
            for i, out in seen.items():
                totals[i] += (out * out.grad * real).sum(1).abs().sum(0).detach().float().cpu()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return totals


def ranking_rows(n: int) -> np.ndarray:
    """Which of `n` texts rank the units: all of them, or a fixed-seed sample of SAMPLE_ROWS, in file
    order (a split sorted by label still gives every label its share)."""
    if n <= SAMPLE_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, SAMPLE_ROWS, replace=False))


@torch.no_grad()
def prune_ffn(model, units: int, scores: list[torch.Tensor]):
    """Keep the `units` highest-scoring feed-forward units of every layer, in place; returns the model."""
    blocks = ffn_blocks(model)
    full = blocks[0][0].out_features
    if not 1 <= units <= full:
        raise UserError(f"distill.student_ffn keeps {units} feed-forward units, but the teacher's layers have "
                        f"{full}; set a fraction in (0, 1], or null for all of them.")
    if units == full:
        return model
    for layer, score in zip(model.base_model.encoder.layer, scores, strict=True):
        keep = torch.sort(torch.topk(score, units).indices).values
        up, down = layer.intermediate.dense, layer.output.dense
        layer.intermediate.dense = _linear(up.weight[keep], up.bias[keep])
        layer.output.dense = _linear(down.weight[:, keep], down.bias)
    model.config.intermediate_size = units
    return model


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Linear:
    out = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                          dtype=weight.dtype, device=weight.device)
    out.weight.copy_(weight)
    if bias is not None:
        out.bias.copy_(bias)
    return out
