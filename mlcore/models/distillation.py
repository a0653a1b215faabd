"""Knowledge distillation of a text classifier: a student initialised from the teacher's own
layers, trained on the engine against the teacher's temperature-softened logits mixed with the
hard labels, and the rule that picks which of the two is registered.

The teacher runs beside the student on every training batch (in eval mode, without gradients)
rather than once up front: the transfer set then needs no row index in its batches, and any
augmentation of a batch is seen by both models alike.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from mlcore.engine.batching import Encoded
from mlcore.engine.loop import FitResult
from mlcore.engine.settings import TrainSettings
from mlcore.errors import UserError
from mlcore.models import classifier, classifier_pooling, pruning

IGNORE = -100  # the hard label of a transfer row without one (an unlabelled text): soft loss only
_LAYER = re.compile(r"^(.*\.layer\.)(\d+)(\..*)$")


def kept_layers(how: str, n_teacher: int, n_student: int | None) -> list[int]:
    """Which teacher encoder layers the student starts from, bottom first. alternate: evenly spaced
    from the bottom (12 -> 6 keeps 0, 2, ..., 10, as DistilBERT did); bottom: the lowest; same: all."""
    if how == "same":
        return list(range(n_teacher))
    k = -(-n_teacher // 2) if n_student is None else n_student
    if not 1 <= k <= n_teacher:
        raise UserError(f"distill.student_layers is {k}, but the teacher has {n_teacher} encoder layers; "
                        f"set it from 1 to {n_teacher}, or null for half of them.")
    if how == "bottom":
        return list(range(k))
    return [i * n_teacher // k for i in range(k)]


def make_student(teacher, keep: list[int], ffn: float | None = None, texts: Encoded | None = None, pad_id: int = 0,
                 teachers: list | None = None):
    """A classifier with the teacher's config but only the `keep` encoder layers, each initialised
    from that teacher layer; embeddings, pooler and head copied as they are. `ffn`: the fraction of
    feed-forward units each layer keeps, ranked on `texts` against `teachers` (default: the teacher;
    mlcore/models/pruning.py)."""
    config = teacher.config.__class__.from_dict(teacher.config.to_dict())
    if not hasattr(config, "num_hidden_layers"):
        raise UserError(f"distill: the teacher ({type(teacher).__name__}) has no num_hidden_layers in its config; "
                        f"only BERT-style encoders can be cut into a student. Use distill.student: same.")
    config.num_hidden_layers = len(keep)
    student = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    classifier_pooling.prepare(student)
    renumber = {old: new for new, old in enumerate(keep)}
    state = {}
    for name, tensor in teacher.state_dict().items():
        m = _LAYER.match(name)
        if m is None:
            state[name] = tensor
        elif int(m.group(2)) in renumber:
            state[f"{m.group(1)}{renumber[int(m.group(2))]}{m.group(3)}"] = tensor
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"distill: the student built from the teacher's layers {keep} does not match its weights "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}); use distill.student: same.")
    if ffn is None:
        return student
    units = pruning.kept_units(ffn, pruning.ffn_blocks(student)[0][0].out_features)
    return pruning.prune_ffn(student, units, pruning.importance(student, teachers or [teacher], texts, pad_id))


class DistillLoss(torch.nn.Module):
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy on the labelled rows.
    T^2 keeps the soft loss's gradients on the hard loss's scale whatever T is (Hinton et al. 2015)."""

    def __init__(self, student, teachers: list, alpha: float, temperature: float, weight: torch.Tensor | None,
                 label_smoothing: float):
        super().__init__()
        self.model, self.alpha, self.t, self.label_smoothing = student, alpha, temperature, label_smoothing
        self.register_buffer("weight", weight, persistent=False)
        # A plain list keeps them outside the module tree: neither DDP, nor the optimizer, nor train() sees them.
        self._teachers = [t.eval().requires_grad_(False) for t in teachers]

    def forward(self, input_ids, attention_mask, labels, encoder_mask=None):
        logits = classifier_pooling.logits(self.model, input_ids, attention_mask, encoder_mask).float()
        with torch.no_grad():  # an ensemble teaches with its members' mean logits
            target = torch.stack([classifier_pooling.logits(t, input_ids, attention_mask, encoder_mask).float()
                                  for t in self._teachers]).mean(0)
        student_t, teacher_t = torch.log_softmax(logits / self.t, -1), torch.log_softmax(target / self.t, -1)
        soft = torch.nn.functional.kl_div(student_t, teacher_t, reduction="batchmean", log_target=True) * self.t ** 2
        # Cross-entropy over the labelled rows only, averaged as PyTorch's "mean" does with class
        # weights; written without a branch on the batch's content, which would wait for the device.
        per_row = torch.nn.functional.cross_entropy(logits, labels, weight=self.weight, ignore_index=IGNORE,
                                                    reduction="none", label_smoothing=self.label_smoothing)
        labelled = (labels != IGNORE).to(logits.dtype)
        row_weight = labelled if self.weight is None else self.weight[labels.clamp(min=0)] * labelled
        hard = per_row.sum() / row_weight.sum().clamp(min=1e-12)
        return self.alpha * soft + (1.0 - self.alpha) * hard


def transfer_set(train: Encoded, unlabelled: Encoded | None) -> Encoded:
    """The rows the student learns from: train with its labels, then unlabelled texts marked IGNORE."""
    if unlabelled is None or not len(unlabelled):
        return train
    return Encoded(train.input_ids + unlabelled.input_ids,
                   np.concatenate([train.labels, np.full(len(unlabelled), IGNORE, dtype=np.int64)]))


def distill(student, teachers: list, transfer: Encoded, val: Encoded, s: TrainSettings, device: torch.device,
            alpha: float, temperature: float, tokenizer, on_epoch: Callable[[dict], None] | None = None,
            checkpoint_dir: Path | None = None, fingerprint: str = "") -> FitResult:
    """Train `student` in place; it ends at its best validation macro-F1 (the engine keeps it). The
    training keys' `augment` augments the transfer set's batches, which the teacher then scores too."""
    n_classes = student.config.num_labels
    labelled = transfer.labels[transfer.labels != IGNORE]
    weight = classifier.balanced_class_weights(labelled, n_classes) if s.class_weights == "auto" else None
    for teacher in teachers:
        teacher.to(device)
    loss = DistillLoss(student, teachers, alpha, temperature, weight, s.label_smoothing)
    return classifier.train_classifier(student, transfer, val, s, device, tokenizer.pad_token_id, on_epoch,
                                       checkpoint_dir, fingerprint, augment=classifier.augment_of(s, tokenizer),
                                       loss_module=loss)


def rows_per_second(model, data: Encoded, device: torch.device, pad_id: int, repeats: int = 3) -> float:
    """Batch-scoring speed (fp32, as the registered model serves by default): the best of `repeats`."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        classifier.predict_logits(model.to(device), data, device, 256, pad_id)
        best = min(best, time.perf_counter() - start)
    return len(data) / max(best, 1e-9)


def choose_candidate(setting: str, report: dict, max_drop: float) -> tuple[str, str]:
    """("teacher" or "student", why) from register.candidate and the distill stage's report, on
    validation macro-F1 only: the test split reports, it never chooses."""
    if not report.get("enabled"):
        return "teacher", "distill is off: the fine-tuned classifier"
    t, s = report["teacher_val_macro_f1"], report["student_val_macro_f1"]
    scores = f"validation macro-F1 student {s:.4f}, teacher {t:.4f}"
    if setting != "auto":
        return setting, f"register.candidate is {setting}; {scores}"
    if t - s <= max_drop:
        return "student", f"the student is within register.max_student_drop {max_drop} of the teacher; {scores}"
    return "teacher", f"the student lost more than register.max_student_drop {max_drop}; {scores}"

