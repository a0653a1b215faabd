"""The training engine shared by MLM pretraining and classifier fine-tuning.

It owns everything that is not specific to the objective: optimizer and schedule,
freezing strategy, mixed precision, gradient accumulation and clipping, DDP,
torch.compile, evaluation each epoch (and every N steps), early stopping with the best epoch kept,
and resumable checkpoints. The objective comes in as a `Job`.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mlcore.engine import checkpointing, distributed, layers, precision
from mlcore.engine.device import seed_everything
from mlcore.engine.optim import make_optimizer
from mlcore.engine.schedules import make_scheduler, warmup_steps
from mlcore.engine.settings import TrainSettings


@dataclass
class Job:
    """What to train. `loss_module(**batch)` returns the loss and wraps `model`."""
    model: torch.nn.Module
    loss_module: torch.nn.Module
    batches: Callable[[int], Iterable[dict[str, torch.Tensor]]]  # epoch (1-based) -> CPU batches
    n_batches: int
    evaluate: Callable[[torch.nn.Module], dict[str, float]]
    score: str | None = None  # metric that picks the best epoch and drives early stopping
    maximize: bool = True
    keep_best: bool = True


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float | None = None
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    tracking_seconds: float = 0.0
    train_seconds: float = 0.0


def _better(score: float, best: float | None, s: TrainSettings, maximize: bool) -> bool:
    if best is None:
        return True
    return score > best + s.min_delta if maximize else score < best - s.min_delta


def _cpu_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class _Stepper:
    """One optimizer step per `grad_accumulation` micro-batches (fewer at the epoch's end)."""

    def __init__(self, job: Job, s: TrainSettings, device: torch.device):
        self.s, self.device, self.model = s, device, job.model
        self.optimizer = make_optimizer(
            s.optimizer, job.model, s.learning_rate, s.weight_decay, momentum=s.momentum,
            layerwise_lr_decay=s.layerwise_lr_decay, fused=None if device.type in ("cpu", "cuda") else False,
        )
        self.per_rank = distributed.shard_count(job.n_batches)
        self.steps_per_epoch = max(1, math.ceil(self.per_rank / s.grad_accumulation))
        total = s.epochs * self.steps_per_epoch
        self.scheduler = make_scheduler(
            self.optimizer, schedule=s.schedule, total_steps=total, warmup=warmup_steps(s.warmup, total),
            steps_per_epoch=self.steps_per_epoch, gamma=s.lr_gamma, step_epochs=s.lr_step_epochs,
        )
        self.last_lr = self.optimizer.param_groups[-1]["lr"]
        self.precision = precision.resolve(s.precision, device)
        self.scaler = precision.grad_scaler(self.precision, device)
        module = torch.compile(job.loss_module) if s.compile else job.loss_module
        self.loss_module = distributed.wrap(module, device)

    def micro_batch(self, batch: dict, index: int, group_size: int) -> tuple[float, bool]:
        """Forward and backward one micro-batch; steps when its accumulation group is complete.
        Returns (loss, whether the optimizer stepped)."""
        last_in_group = (index + 1) % self.s.grad_accumulation == 0 or index + 1 == self.per_rank
        sync = getattr(self.loss_module, "no_sync", None)
        ctx = sync() if sync is not None and not last_in_group else contextlib.nullcontext()
        with ctx:
            with precision.autocast(self.precision, self.device):
                loss = self.loss_module(**batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} (learning rate {self.s.learning_rate} too high?)")
            self.scaler.scale(loss / group_size).backward()
        if last_in_group:
            self.scaler.unscale_(self.optimizer)
            if self.s.max_grad_norm:
                torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], self.s.max_grad_norm)
            self.last_lr = self.optimizer.param_groups[-1]["lr"]  # the top layer's rate, as used
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
        return loss.item(), last_in_group


def _apply_strategy(model, s: TrainSettings, epoch: int) -> None:
    n = layers.num_layers(model)
    layers.set_trainable(model, layers.trainable_from(s.strategy, n, s.freeze_layers, epoch, s.unfreeze_per_epoch))


def fit(
    job: Job, s: TrainSettings, device: torch.device, *, desc: str = "epoch",
    on_epoch: Callable[[dict], None] | None = None, checkpoint_dir: Path | None = None, fingerprint: str = "",
) -> FitResult:
    """Train `job.model` in place for `s.epochs` epochs (fewer with early stopping).

    With `checkpoint_dir`, a checkpoint is written after each epoch and a later call with
    the same settings and `fingerprint` resumes after the last saved epoch. `on_epoch`
    receives each epoch's metrics and may raise (optuna.TrialPruned) to stop.
    """
    seed_everything(s.seed)
    device = distributed.setup(device)
    precision.enable_tf32(device)
    if s.strategy == "gradual_unfreeze" and distributed.world_size() > 1:
        raise ValueError("strategy gradual_unfreeze changes the trainable set mid-run, which DDP cannot follow; "
                         "use another strategy with several processes")
    model = job.model.to(device)
    if s.dropout is not None:
        layers.override_dropout(model, s.dropout)
    # Static strategies leave frozen weights out of the optimizer; gradual unfreezing
    # registers all of them and only toggles which ones receive gradients.
    if s.strategy == "gradual_unfreeze":
        layers.set_trainable(model, 0)
    else:
        _apply_strategy(model, s, epoch=1)
    stepper = _Stepper(job, s, device)
    result = FitResult()
    state = checkpointing.TrainState(epoch=0, step=0, fingerprint=f"{s.fingerprint()}-{fingerprint}")
    best = None
    saved = checkpointing.peek(checkpoint_dir) if checkpoint_dir and s.resume else None
    if saved is not None and saved.fingerprint == state.fingerprint:
        state, best = checkpointing.load(checkpoint_dir, model, stepper.optimizer, stepper.scheduler)
        result.resumed_from_epoch = state.epoch
        if distributed.is_main():
            print(f"{desc}: resuming from the checkpoint after epoch {state.epoch} (step {state.step})")
    main = distributed.is_main()
    evaluations = len(state.history)

    def evaluate(epoch: float, train_loss: float, samples_per_s: float) -> dict:
        """Score the model now and keep it if it is the best so far."""
        nonlocal best, evaluations
        evaluations += 1
        row = {"epoch": epoch, "step": state.step, "evaluation": evaluations,
               "train_loss": distributed.mean(train_loss), **job.evaluate(model),
               "learning_rate": stepper.last_lr, "samples_per_s": samples_per_s}
        model.train()  # evaluate() switched to eval mode; a mid-epoch evaluation goes on training
        state.history.append(row)
        if job.score is None or _better(row[job.score], state.best_score, s, job.maximize):
            state.best_epoch, state.waited = epoch, 0
            state.best_score = row[job.score] if job.score else None
            best = _cpu_copy(model) if job.keep_best and job.score else None
        else:
            state.waited += 1
        return row

    def report(row: dict) -> bool:
        """Hand the row to `on_epoch` (which may raise to stop); True when early stopping fires."""
        if on_epoch is not None and main:
            t = time.perf_counter()
            on_epoch(row)
            result.tracking_seconds += time.perf_counter() - t
        return s.patience is not None and state.waited >= s.patience

    stop = False
    for epoch in range(state.epoch + 1, s.epochs + 1):
        if s.patience is not None and state.waited >= s.patience:
            break  # resumed from a checkpoint taken when early stopping had already fired
        if s.strategy == "gradual_unfreeze":
            _apply_strategy(model, s, epoch)
        model.train()
        total, seen, index, start, paused = 0.0, 0, 0, time.perf_counter(), 0.0
        bar = tqdm(total=stepper.per_rank, desc=f"{desc} {epoch}/{s.epochs}", unit="batch", leave=False,
                   mininterval=1.0, disable=not main)
        for i, batch in enumerate(job.batches(epoch)):
            if not distributed.mine(i, job.n_batches):
                continue
            group_start = index - index % s.grad_accumulation
            group_size = min(s.grad_accumulation, stepper.per_rank - group_start)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            n = len(batch["input_ids"])
            loss, stepped = stepper.micro_batch(batch, index, group_size)
            total, seen, index, state.step = total + loss * n, seen + n, index + 1, state.step + stepped
            bar.update(1)
            bar.set_postfix(loss=f"{total / seen:.4f}", ex_per_s=f"{seen / (time.perf_counter() - start - paused):.0f}",
                            lr=f"{stepper.scheduler.get_last_lr()[-1]:.2e}", refresh=False)
            # Every N optimizer steps (s.eval_every_steps), besides the epoch's end: lets a
            # search prune a bad trial inside its first epoch.
            if (s.eval_every_steps and stepped and state.step % s.eval_every_steps == 0
                    and index < stepper.per_rank):
                pause = time.perf_counter()
                row = evaluate(round(epoch - 1 + index / stepper.per_rank, 4), total / seen,
                               seen * distributed.world_size() / (pause - start - paused))
                stop = report(row)
                paused += time.perf_counter() - pause  # training speed leaves evaluation out
                if stop:
                    break
        bar.close()
        seconds = time.perf_counter() - start - paused
        result.train_seconds += seconds
        if stop:
            result.stopped_early = True
            break
        state.epoch = epoch
        row = evaluate(epoch, total / max(seen, 1), seen * distributed.world_size() / seconds)
        if checkpoint_dir and main:
            checkpointing.save(checkpoint_dir, model, stepper.optimizer, stepper.scheduler, state, best)
        if report(row):
            result.stopped_early = epoch < s.epochs
            break
    if best is not None:
        model.load_state_dict(best)
    result.history, result.best_epoch, result.best_score = state.history, state.best_epoch, state.best_score
    return result
