"""One optimizer step per accumulation group: the optimizer and schedule, mixed precision,
gradient scaling and clipping, torch.compile and the DDP wrapper."""
from __future__ import annotations

import contextlib
import math

import torch

from mlcore.engine import distributed, precision
from mlcore.engine.master_weights import MasterWeights
from mlcore.engine.optim import make_optimizer
from mlcore.engine.schedules import make_scheduler, warmup_steps
from mlcore.engine.settings import TrainSettings


class Stepper:
    """One optimizer step per `grad_accumulation` micro-batches (fewer at the epoch's end)."""

    def __init__(self, model: torch.nn.Module, loss_module: torch.nn.Module, n_batches: int, s: TrainSettings,
                 device: torch.device):
        self.s, self.device, self.model = s, device, model
        self.optimizer = make_optimizer(
            s.optimizer, model, s.learning_rate, s.weight_decay, momentum=s.momentum,
            layerwise_lr_decay=s.layerwise_lr_decay, fused=None if device.type in ("cpu", "cuda") else False,
        )
        self.per_rank = distributed.shard_count(n_batches)
        self.steps_per_epoch = max(1, math.ceil(self.per_rank / s.grad_accumulation))
        total = s.epochs * self.steps_per_epoch
        self.scheduler = make_scheduler(
            self.optimizer, schedule=s.schedule, total_steps=total, warmup=warmup_steps(s.warmup, total),
            steps_per_epoch=self.steps_per_epoch, gamma=s.lr_gamma, step_epochs=s.lr_step_epochs,
        )
        self.last_lr = self.optimizer.param_groups[-1]["lr"]
        self.precision = precision.resolve(s.precision, device)
        self.scaler = precision.grad_scaler(self.precision, device)
        self.master = MasterWeights(model, self.optimizer) if self.precision == "bf16-weights" else None
        module = torch.compile(loss_module) if s.compile else loss_module
        self.loss_module = distributed.wrap(module, device)

    def micro_batch(self, batch: dict, index: int) -> tuple[torch.Tensor, bool]:
        """Forward and backward the epoch's `index`-th micro-batch on this rank; steps when its
        accumulation group is complete. Returns (the loss, still on the device, and whether the
        optimizer stepped). Nothing here waits for the device: the loop checks that the loss
        stays finite when it reads it."""
        group_start = index - index % self.s.grad_accumulation
        group_size = min(self.s.grad_accumulation, self.per_rank - group_start)
        last_in_group = (index + 1) % self.s.grad_accumulation == 0 or index + 1 == self.per_rank
        sync = getattr(self.loss_module, "no_sync", None)
        ctx = sync() if sync is not None and not last_in_group else contextlib.nullcontext()
        with ctx:
            with precision.autocast(self.precision, self.device):
                loss = self.loss_module(**batch)
            self.scaler.scale(loss / group_size).backward()
        if last_in_group:
            if self.master:
                self.master.grads_to_masters()
            self.scaler.unscale_(self.optimizer)
            if self.s.max_grad_norm:
                with_grads = (self.master.master_params() if self.master else
                              [p for p in self.model.parameters() if p.grad is not None])
                torch.nn.utils.clip_grad_norm_(with_grads, self.s.max_grad_norm)
            self.last_lr = self.optimizer.param_groups[-1]["lr"]  # the top layer's rate, as used
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.master:
                self.master.masters_to_weights()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
        return loss.detach(), last_in_group

    def weights(self) -> dict[str, torch.Tensor]:
        """The model's state on the CPU, as a checkpoint or the best epoch keeps it (fp32 masters
        under bf16-weights)."""
        if self.master:
            return self.master.state_dict()
        return {k: v.detach().cpu().clone().contiguous() for k, v in self.model.state_dict().items()}

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        (self.master or self.model).load_state_dict(state)

    def release(self) -> None:
        """After training: the model in fp32 again under bf16-weights (a no-op otherwise)."""
        if self.master:
            self.master.release()
