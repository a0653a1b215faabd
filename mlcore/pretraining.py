"""Masked-language-model pretraining: 15% of tokens masked, split 80/10/10."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from mlcore.batching import Encoded, batches, length_grouped_order
from mlcore.device import autocast, seed_everything
from mlcore.optim import backward_step, linear_warmup_decay, make_optimizer


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: list[int],
    mask_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick `probability` of real tokens; 80% -> [MASK], 10% random, 10% kept.

    Returns (masked inputs, labels) with label -100 where no prediction is made.
    """
    labels = input_ids.clone()
    candidates = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids))
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & candidates
    labels[~chosen] = -100
    masked = input_ids.clone()
    roll = torch.rand(input_ids.shape, generator=generator)
    masked[chosen & (roll < 0.8)] = mask_id
    randomise = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[randomise] = torch.randint(vocab_size, input_ids.shape, generator=generator)[randomise]
    return masked, labels


@dataclass
class MlmEpoch:
    epoch: int
    train_loss: float
    val_loss: float
    val_perplexity: float
    samples_per_s: float


class MlmBatcher:
    def __init__(self, tokenizer, probability: float):
        self.special = list(tokenizer.all_special_ids)
        self.mask_id = tokenizer.mask_token_id
        self.vocab = len(tokenizer)
        self.pad_id = tokenizer.pad_token_id
        self.p = probability

    def __call__(self, data: Encoded, batch_size: int, order: np.ndarray, gen: torch.Generator):
        for _, b in batches(data, batch_size, self.pad_id, order=order):
            ids, labels = mask_tokens(b["input_ids"], b["attention_mask"], self.special, self.mask_id, self.vocab, self.p, gen)
            yield {"input_ids": ids, "attention_mask": b["attention_mask"], "labels": labels}


def masked_lm_loss(model, input_ids, attention_mask, labels) -> torch.Tensor:
    """MLM loss with the vocabulary projection applied to the masked positions only.

    BertForMaskedLM projects every position onto the vocabulary; with 15% masking that
    wastes ~85% of the most expensive matmul of a small model, so the encoder and the
    prediction head are called separately here.
    """
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    chosen = labels != -100
    head = model.cls if hasattr(model, "cls") else model.lm_head  # BERT-style / RoBERTa-style heads
    logits = head(hidden[chosen])
    return torch.nn.functional.cross_entropy(logits.float(), labels[chosen])


@torch.inference_mode()
def mlm_loss(model, data: Encoded, batcher: MlmBatcher, device, batch_size: int, seed: int = 0) -> float:
    """Mean masked-token loss with a fixed masking seed, so epochs are comparable."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for batch in batcher(data, batch_size, np.arange(len(data)), gen):
        n = int((batch["labels"] != -100).sum())
        if n == 0:
            continue
        with autocast(device):
            loss = masked_lm_loss(model, **{k: v.to(device) for k, v in batch.items()})
        total += loss.item() * n
        count += n
    return total / max(count, 1)


def pretrain_mlm(
    model, tokenizer, train: Encoded, val: Encoded, *, epochs: int, batch_size: int, lr: float,
    probability: float, seed: int, device: torch.device, on_epoch: Callable[[MlmEpoch], None] | None = None,
) -> list[MlmEpoch]:
    seed_everything(seed)
    model.to(device)
    batcher = MlmBatcher(tokenizer, probability)
    optimizer = make_optimizer("adamw", model, lr, weight_decay=0.01)
    scheduler = linear_warmup_decay(optimizer, max(1, epochs * math.ceil(len(train) / batch_size)), 0.06)
    gen, rng, history = torch.Generator().manual_seed(seed), np.random.default_rng(seed), []
    for epoch in range(1, epochs + 1):
        model.train()
        total, seen, start = 0.0, 0, time.perf_counter()
        bar = tqdm(total=len(train), desc=f"mlm epoch {epoch}/{epochs}", unit="ex", leave=False, mininterval=1.0)
        for batch in batcher(train, batch_size, length_grouped_order(train, batch_size, rng), gen):
            if not (batch["labels"] != -100).any():
                continue  # nothing masked in this batch (tiny batches of very short texts)
            with autocast(device):
                loss = masked_lm_loss(model, **{k: v.to(device) for k, v in batch.items()})
            backward_step(model, optimizer, scheduler, loss)
            n = len(batch["input_ids"])
            total, seen = total + loss.item() * n, seen + n
            bar.update(n)
            bar.set_postfix(loss=f"{total / seen:.3f}", ex_per_s=f"{seen / (time.perf_counter() - start):.0f}")
        bar.close()
        speed = seen / (time.perf_counter() - start)
        val_loss = mlm_loss(model, val, batcher, device, batch_size * 4)
        result = MlmEpoch(epoch, total / max(seen, 1), val_loss, math.exp(min(val_loss, 50)), speed)
        history.append(result)
        if on_epoch:
            on_epoch(result)
    return history
