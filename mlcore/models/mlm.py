"""Masked-language-model pretraining on the engine: 15% of tokens (or whole words)
masked 80/10/10, optionally over texts packed into full-length blocks."""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mlcore.config import PretrainConfig
from mlcore.engine import precision
from mlcore.engine.batching import Encoded, batches, choose_max_length, epoch_order
from mlcore.engine.loop import FitResult, Job, fit
from mlcore.engine.settings import TrainSettings
from mlcore.models import modeling, wordpiece
from mlcore.models.masking import continuation_ids, mask_tokens, pack_blocks, word_starts


class MlmBatcher:
    """Pads and masks batches; masking runs in the main process from a seeded generator."""

    def __init__(self, tokenizer, probability: float, whole_word: bool = False):
        self.special = list(tokenizer.all_special_ids)
        self.mask_id = tokenizer.mask_token_id
        self.vocab = len(tokenizer)
        self.pad_id = tokenizer.pad_token_id
        self.p = probability
        self.continuation = continuation_ids(tokenizer) if whole_word else None

    def __call__(self, data: Encoded, batch_size: int, order: np.ndarray, gen: torch.Generator):
        for _, b in batches(data, batch_size, self.pad_id, order=order):
            starts = None if self.continuation is None else word_starts(b["input_ids"], self.continuation)
            ids, labels = mask_tokens(b["input_ids"], b["attention_mask"], self.special, self.mask_id,
                                      self.vocab, self.p, gen, word_starts=starts)
            yield {"input_ids": ids, "attention_mask": b["attention_mask"], "labels": labels}


def masked_lm_loss(model, input_ids, attention_mask, labels) -> torch.Tensor:
    """MLM loss with the vocabulary projection applied to the masked positions only.

    BertForMaskedLM projects every position onto the vocabulary; with 15% masking that
    wastes ~85% of the most expensive matmul of a small model, so the encoder and the
    prediction head are called separately here.
    """
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    chosen = labels != -100
    if not chosen.any():  # a batch of very short texts can draw no mask: a zero loss, no step effect
        return hidden.sum() * 0.0
    head = model.cls if hasattr(model, "cls") else model.lm_head  # BERT-style / RoBERTa-style heads
    logits = head(hidden[chosen])
    return torch.nn.functional.cross_entropy(logits.float(), labels[chosen])


class MaskedLMLoss(torch.nn.Module):
    """The loss as a module, so DDP and torch.compile see the whole forward pass."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels, encoder_mask=None):
        return masked_lm_loss(self.model, input_ids, attention_mask if encoder_mask is None else encoder_mask, labels)


@torch.inference_mode()
def mlm_loss(model, data: Encoded, batcher: MlmBatcher, device, batch_size: int, seed: int = 0,
             precision_name: str = "auto") -> float:
    """Mean masked-token loss with a fixed masking seed, so epochs are comparable."""
    model.eval()
    mode = precision.resolve(precision_name, device)
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for batch in batcher(data, batch_size, np.arange(len(data)), gen):
        n = int((batch["labels"] != -100).sum())
        if n == 0:
            continue
        with precision.autocast(mode, device):
            loss = masked_lm_loss(model, **{k: v.to(device) for k, v in batch.items()})
        total += loss.item() * n
        count += n
    return total / max(count, 1)


def pack(data: Encoded, tokenizer, block_size: int) -> Encoded:
    """Texts concatenated into full blocks: no padding, and every step sees block_size tokens."""
    return Encoded(pack_blocks(data.input_ids, block_size, tokenizer.cls_token_id, tokenizer.sep_token_id))


def pretrain_mlm(
    model, tokenizer, train: Encoded, val: Encoded, s: TrainSettings, *, probability: float,
    device: torch.device, whole_word: bool = False, on_epoch: Callable[[dict], None] | None = None,
    checkpoint_dir: Path | None = None, fingerprint: str = "",
) -> FitResult:
    """Pretrain in place; each epoch reports train loss, validation MLM loss and perplexity."""
    batcher = MlmBatcher(tokenizer, probability, whole_word)

    def epoch_batches(epoch: int):
        gen = torch.Generator().manual_seed(s.seed * 1_000_003 + epoch)  # per epoch: resumable
        return batcher(train, s.batch_size, epoch_order(train, s, epoch), gen)

    def evaluate(m) -> dict[str, float]:
        loss = mlm_loss(m, val, batcher, device, s.eval_batch_size, precision_name=s.precision)
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50))}

    job = Job(model=model, loss_module=MaskedLMLoss(model), batches=epoch_batches,
              n_batches=-(-len(train) // s.batch_size), evaluate=evaluate, score=None, keep_best=False)
    return fit(job, s, device, desc="mlm epoch", on_epoch=on_epoch, checkpoint_dir=checkpoint_dir,
               fingerprint=fingerprint)


def starting_point(p: PretrainConfig, texts: list[str]):
    """(model, tokenizer): the checkpoint of `init_from` with its own tokenizer, or a new
    small BERT with a WordPiece vocabulary trained on `texts` (deterministic: every rank, and
    a resumed run, learns the same vocabulary from the same texts). The model's config carries
    the classifier pooling (`pretrain.pooling`, auto resolved here) to every later stage."""
    if p.init_from:
        source = modeling.resolve_checkpoint(p.init_from, "pretrain.init_from")
        model, tokenizer = modeling.load_mlm_model(source)
        pooling = modeling.source_pooling(source) if p.pooling == "auto" else p.pooling
        # The starting weights' hash travels in config.json to every later model (lineage).
        model.config.init_weights_sha256 = modeling.weights_digest(source)
    else:
        auto = p.max_length == "auto"
        tokenizer = wordpiece.train_wordpiece(texts, p.vocab_size, 512 if auto else p.max_length)
        if auto:  # the new model's positions: the length chosen over `texts`
            tokenizer.model_max_length = choose_max_length("auto", tokenizer, texts).max_length
            p = p.model_copy(update={"max_length": tokenizer.model_max_length})
        model = modeling.new_mlm_model(p, len(tokenizer), tokenizer.pad_token_id)
        pooling = "cls" if p.pooling == "auto" else p.pooling
    model.config.classifier_pooling = pooling
    return model, tokenizer


def report(model, tokenizer, result: FitResult, val: Encoded, s: TrainSettings, p: PretrainConfig,
           device: torch.device, train_texts: int, train_sequences: int) -> dict:
    """The pretrain stage's report. With no epoch run (epochs: 0 adopts the checkpoint), the
    validation loss is measured here, with the evaluation's batch size and masking seed."""
    if result.history:
        val_loss = result.history[-1]["val_loss"]
    else:
        batcher = MlmBatcher(tokenizer, p.mlm_probability, p.whole_word_masking)
        val_loss = mlm_loss(model.to(device), val, batcher, device, s.eval_batch_size, precision_name=s.precision)
    return {
        "val_mlm_loss": val_loss,
        "val_perplexity": math.exp(min(val_loss, 50)),
        "parameters": modeling.count_parameters(model),
        "vocab_size": len(tokenizer),
        "train_texts": train_texts,
        "train_sequences": train_sequences,
        "init_from": p.init_from,
        "init_weights_sha256": getattr(model.config, "init_weights_sha256", None),
        "classifier_pooling": model.config.classifier_pooling,
        "resumed_from_epoch": result.resumed_from_epoch,
        "tracking_overhead_pct": 100 * result.tracking_seconds / max(result.train_seconds, 1e-9),
    }
