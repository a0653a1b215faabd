"""The training engine shared by MLM pretraining and classifier fine-tuning.

It owns everything that is not specific to the objective: optimizer and schedule,
freezing strategy, mixed precision, gradient accumulation and clipping, DDP,
torch.compile, evaluation each epoch (and every N steps), early stopping with the best epoch kept,
and resumable checkpoints. The objective comes in as a `Job`. One optimizer step (with its
accumulation, precision, clipping and DDP) is `stepper.Stepper`; this module runs the epochs.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mlcore.engine import checkpointing, distributed, layers, lora, precision, transfer
from mlcore.engine.device import seed_everything
from mlcore.engine.settings import TrainSettings
from mlcore.engine.stepper import Stepper

BAR_SECONDS = 1.0  # how often the progress bar shows the loss, which means waiting for the device


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


def _apply_strategy(model, s: TrainSettings, epoch: int) -> None:
    n = layers.num_layers(model)
    layers.set_trainable(model, layers.trainable_from(s.strategy, n, s.freeze_layers, epoch, s.unfreeze_per_epoch))


def _prepare(job: Job, s: TrainSettings, device: torch.device) -> torch.device:
    """Seed, join DDP, and put `job.model` on this rank's device with the settings'
    dropout and trainable layers. Returns the device to train on."""
    seed_everything(s.seed)
    device = distributed.setup(device)
    precision.enable_tf32(device)
    if s.strategy == "gradual_unfreeze" and distributed.world_size() > 1:
        raise ValueError("strategy gradual_unfreeze changes the trainable set mid-run, which DDP cannot follow; "
                         "use another strategy with several processes")
    if s.strategy == "lora":  # before the move: the adapters are created beside their layers
        lora.add_adapters(job.model, s.lora_rank, s.lora_alpha, s.lora_dropout, list(s.lora_targets))
    model = job.model.to(device)
    if s.dropout is not None:
        layers.override_dropout(model, s.dropout)
    # Static strategies leave frozen weights out of the optimizer; gradual unfreezing
    # registers all of them and only toggles which ones receive gradients.
    if s.strategy == "lora":
        lora.set_trainable(model)
    elif s.strategy == "gradual_unfreeze":
        layers.set_trainable(model, 0)
    else:
        _apply_strategy(model, s, epoch=1)
    return device


@dataclass
class _Epoch:
    """One epoch's running totals on this rank. Its clock leaves evaluations out."""
    start: float = field(default_factory=time.perf_counter)
    # Loss times examples, kept as a float64 tensor on the device: reading it (.item()) waits
    # for the GPU, so it is read only when the progress bar refreshes and at the epoch's end,
    # and the host queues the next steps meanwhile. float64 sums exactly what Python floats did.
    loss_sum: torch.Tensor | float = 0.0
    seen: int = 0  # examples
    index: int = 0  # micro-batches
    paused: float = 0.0  # seconds spent in evaluations inside the epoch
    seconds: float = 0.0  # training seconds, once the epoch is over
    stopped: bool = False  # early stopping fired at an evaluation inside the epoch

    def elapsed(self, now: float) -> float:
        return now - self.start - self.paused

    def add(self, loss: torch.Tensor, n: int) -> None:
        self.loss_sum = self.loss_sum + loss.detach().double() * n
        self.seen += n

    def train_loss(self, learning_rate: float) -> float:
        """The mean loss so far; raises FloatingPointError once it is no longer finite (the
        run diverged since the last reading, within about a second of training)."""
        loss = float(self.loss_sum) / max(self.seen, 1)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} (learning rate {learning_rate} too high?)")
        return loss

    def samples_per_s(self, seconds: float) -> float:
        return self.seen * distributed.world_size() / seconds


class _Run:
    """One call of `fit`: the model, its stepper, the resumable state and the best weights."""

    def __init__(self, job: Job, s: TrainSettings, device: torch.device, desc: str,
                 on_epoch: Callable[[dict], None] | None, checkpoint_dir: Path | None, fingerprint: str):
        self.job, self.s, self.desc, self.on_epoch, self.checkpoint_dir = job, s, desc, on_epoch, checkpoint_dir
        self.device = _prepare(job, s, device)
        self.model = job.model
        self.stepper = Stepper(job.model, job.loss_module, job.n_batches, s, self.device)
        self.result = FitResult()
        self.state = checkpointing.TrainState(epoch=0, step=0, fingerprint=f"{s.fingerprint()}-{fingerprint}")
        self.best: dict[str, torch.Tensor] | None = None  # the best evaluation's weights, on the CPU
        self.main = distributed.is_main()

    def resume(self) -> None:
        """Carry on after the last epoch in `checkpoint_dir` when these settings saved it."""
        saved = checkpointing.peek(self.checkpoint_dir) if self.checkpoint_dir and self.s.resume else None
        if saved is None or saved.fingerprint != self.state.fingerprint:
            return
        self.state, self.best = checkpointing.load(
            self.checkpoint_dir, self.stepper.load_weights, self.stepper.optimizer, self.stepper.scheduler)
        self.result.resumed_from_epoch = self.state.epoch
        if self.main:
            print(f"{self.desc}: resuming from the checkpoint after epoch {self.state.epoch} (step {self.state.step})")

    def waited_out(self) -> bool:
        """Early stopping has fired: no improvement in the last `patience` evaluations."""
        return self.s.patience is not None and self.state.waited >= self.s.patience

    def train_epoch(self, epoch: int) -> _Epoch:
        """Train one epoch, evaluating every `eval_every_steps` optimizer steps inside it."""
        s, stepper = self.s, self.stepper
        if s.strategy == "gradual_unfreeze":
            _apply_strategy(self.model, s, epoch)
        layers.train_mode(self.model)
        ep = _Epoch()
        bar = tqdm(total=stepper.per_rank, desc=f"{self.desc} {epoch}/{s.epochs}", unit="batch", leave=False,
                   mininterval=BAR_SECONDS, disable=not self.main)
        shown = time.perf_counter()
        for i, batch in enumerate(self.job.batches(epoch)):
            if not distributed.mine(i, self.job.n_batches):
                continue
            stepped = self._train_batch(batch, ep)
            bar.update(1)
            if time.perf_counter() - shown >= BAR_SECONDS:  # reading the loss waits for the device
                shown = time.perf_counter()
                bar.set_postfix(loss=f"{ep.train_loss(s.learning_rate):.4f}",
                                ex_per_s=f"{ep.seen / ep.elapsed(shown):.0f}",
                                lr=f"{stepper.scheduler.get_last_lr()[-1]:.2e}", refresh=False)
            # Every N optimizer steps (s.eval_every_steps), besides the epoch's end: lets a
            # search prune a bad trial inside its first epoch.
            if (s.eval_every_steps and stepped and self.state.step % s.eval_every_steps == 0
                    and ep.index < stepper.per_rank):
                ep.stopped = self._evaluate_mid_epoch(epoch, ep)
                if ep.stopped:
                    break
        bar.close()
        ep.train_loss(s.learning_rate)  # waits for the device's last step before the clock is read
        ep.seconds = ep.elapsed(time.perf_counter())
        self.result.train_seconds += ep.seconds
        return ep

    def _train_batch(self, batch: dict, ep: _Epoch) -> bool:
        """One micro-batch on the device; True when the optimizer stepped."""
        rows = len(batch["labels"])
        loss, stepped = self.stepper.micro_batch(transfer.to_device(batch, self.device), ep.index)
        ep.add(loss, rows)
        ep.index += 1
        self.state.step += stepped
        return stepped

    def _evaluate_mid_epoch(self, epoch: int, ep: _Epoch) -> bool:
        """Evaluate and report mid-epoch, off the training clock; True when early stopping fires."""
        loss = ep.train_loss(self.s.learning_rate)  # waits for the device before the clock is read
        pause = time.perf_counter()
        row = self.evaluate(round(epoch - 1 + ep.index / self.stepper.per_rank, 4), loss,
                            ep.samples_per_s(ep.elapsed(pause)))
        stop = self.report(row)
        ep.paused += time.perf_counter() - pause  # training speed leaves evaluation out
        return stop

    def evaluate(self, epoch: float, train_loss: float, samples_per_s: float) -> dict:
        """Score the model now, add the row to the history, and keep the model if it is the best so far."""
        row = {"epoch": epoch, "step": self.state.step, "evaluation": len(self.state.history) + 1,
               "train_loss": distributed.mean(train_loss), **self.job.evaluate(self.model),
               "learning_rate": self.stepper.last_lr, "samples_per_s": samples_per_s}
        layers.train_mode(self.model)  # job.evaluate switched to eval mode; a mid-epoch evaluation goes on training
        self.state.history.append(row)
        self._keep_if_best(row, epoch)
        return row

    def _keep_if_best(self, row: dict, epoch: float) -> None:
        """The best epoch, its score and weights, and how many evaluations have not beaten it since."""
        job, state = self.job, self.state
        if job.score is None or _better(row[job.score], state.best_score, self.s, job.maximize):
            state.best_epoch, state.waited = epoch, 0
            state.best_score = row[job.score] if job.score else None
            self.best = self.stepper.weights() if job.keep_best and job.score else None
        else:
            state.waited += 1

    def report(self, row: dict) -> bool:
        """Hand the row to `on_epoch` (which may raise to stop); True when early stopping fires."""
        if self.on_epoch is not None and self.main:
            t = time.perf_counter()
            self.on_epoch(row)
            self.result.tracking_seconds += time.perf_counter() - t
        return self.waited_out()

    def save_checkpoint(self) -> None:
        """On the main rank, when `fit` was given a checkpoint directory."""
        if self.checkpoint_dir and self.main:
            checkpointing.save(self.checkpoint_dir, self.stepper.weights(), self.stepper.optimizer,
                               self.stepper.scheduler, self.state, self.best)

    def finish(self) -> FitResult:
        """Restore the best weights (when kept) and return the run's result."""
        if self.best is not None:
            self.stepper.load_weights(self.best)
        self.stepper.release()
        if self.s.strategy == "lora":
            lora.merge_adapters(self.model)  # a plain model leaves training
        self.result.history, self.result.best_epoch = self.state.history, self.state.best_epoch
        self.result.best_score = self.state.best_score
        return self.result


def fit(
    job: Job, s: TrainSettings, device: torch.device, *, desc: str = "epoch",
    on_epoch: Callable[[dict], None] | None = None, checkpoint_dir: Path | None = None, fingerprint: str = "",
) -> FitResult:
    """Train `job.model` in place for `s.epochs` epochs (fewer with early stopping).

    With `checkpoint_dir`, a checkpoint is written after each epoch and a later call with
    the same settings and `fingerprint` resumes after the last saved epoch. `on_epoch`
    receives each epoch's metrics and may raise (optuna.TrialPruned) to stop.
    """
    run = _Run(job, s, device, desc, on_epoch, checkpoint_dir, fingerprint)
    run.resume()
    for epoch in range(run.state.epoch + 1, s.epochs + 1):
        if run.waited_out():
            break  # resumed from a checkpoint taken when early stopping had already fired
        trained = run.train_epoch(epoch)
        if trained.stopped:  # early stopping fired at an evaluation inside the epoch
            run.result.stopped_early = True
            break
        run.state.epoch = epoch
        row = run.evaluate(epoch, trained.train_loss(s.learning_rate), trained.samples_per_s(trained.seconds))
        run.save_checkpoint()
        if run.report(row):
            run.result.stopped_early = epoch < s.epochs
            break
    return run.finish()
