"""bf16 weights with fp32 master copies: precision `bf16-weights`.

Autocast keeps the weights in fp32 and casts them to bf16 at every forward, and LayerNorm and
the residual stream stay in fp32 around the bf16 matmuls. With the weights themselves in bf16,
forward and backward run in bf16 throughout: no weight casts and half the activation traffic.
On an H200 a BERT-base-sized model trained at 1.17x autocast's tokens/s at batch 512
(docs/benchmarks.md). bf16 keeps 8 bits of mantissa, too few to accumulate updates of 1e-4 of
a weight, so the optimizer steps fp32 copies ("masters") and the bf16 weights are refreshed
from them after each step. Everything that leaves training (the best epoch's weights, the
checkpoints, the model `fit` returns) holds the fp32 masters.
"""
from __future__ import annotations

import torch


class MasterWeights:
    """Casts `model` to bf16 and points `optimizer` at fp32 copies of its parameters."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.model = model
        # every floating parameter, frozen ones too, so the fp32 model comes back bit for bit
        self.masters = {id(p): torch.nn.Parameter(p.detach().float().clone(), requires_grad=p.requires_grad)
                        for p in model.parameters() if p.is_floating_point()}
        for group in optimizer.param_groups:  # before the first step: the optimizer holds no state yet
            group["params"] = [self.masters[id(p)] for p in group["params"]]
        model.to(torch.bfloat16)  # in place: the Parameter objects (and the ids above) stay
        self.pairs = [(p, self.masters[id(p)]) for p in model.parameters() if id(p) in self.masters]

    def grads_to_masters(self) -> None:
        """The bf16 gradients, as fp32, onto the masters (the optimizer's parameters)."""
        for p, m in self.pairs:
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None

    def master_params(self) -> list[torch.Tensor]:
        return [m for _, m in self.pairs if m.grad is not None]

    @torch.no_grad()
    def masters_to_weights(self) -> None:
        for p, m in self.pairs:
            p.copy_(m)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state on the CPU with the fp32 masters in place of its bf16 parameters."""
        return {k: (self.masters.get(id(v), v)).detach().cpu().clone().contiguous()
                for k, v in self.model.state_dict(keep_vars=True).items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Masters and weights from a state `state_dict` wrote (a checkpoint, the best epoch)."""
        for k, v in self.model.state_dict(keep_vars=True).items():
            if id(v) in self.masters:
                self.masters[id(v)].copy_(state[k])
        self.model.load_state_dict(state)

    @torch.no_grad()
    def release(self) -> None:
        """The model back in fp32, holding the masters' values."""
        self.model.float()
        for p, m in self.pairs:
            p.copy_(m)
