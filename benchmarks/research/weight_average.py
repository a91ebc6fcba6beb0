"""Exponential moving average (EMA) of SimSID's networks, swapped in wherever the model is scored.

The adversarial game makes SimSID's score swing by up to 10 AUROC points between evaluations; an
average of recent weights is a steadier model. Only the networks are averaged (never anomalib's
pre-/post-processors). A naive average of generator *and* critic scored lower than the raw weights
(measured: the averaged critic no longer matches the averaged generator's reconstructions), hence
``scope="generator"`` by default; ``"both"`` averages the critic too, and the caller recomputes
BatchNorm statistics for the averaged networks. Measured not to help (``benchmarks/results/robust``);
used by :class:`benchmarks.research.simsid_options.SimSIDResearch` only.

The shadow copy lives outside the exported ``model``: :meth:`WeightAverage.swap` exchanges live and
averaged values in place (parameter objects stay the same, so optimiser states stay valid), and the
persistent ``averaged_in_model`` flag says which of the two the model holds, so a checkpoint saved
with the averaged weights in the model also resumes training correctly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

SCOPES = ("generator", "both")


class WeightAverage(nn.Module):
    """EMA shadow of ``modules`` (name -> module): parameters averaged, buffers copied.

    Buffers (BatchNorm statistics, a memory queue) are not averaged: they are copied from the live
    networks at every update, so the averaged generator reads the live queue. The decay warms up as
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates: without it a short run's average stays
    close to the random initial weights (decay 0.98 after 72 steps keeps 23 % of them; measured on
    ZhangLab, 64 px, 2 epochs: validation AUROC 0.48 against 0.66 for the raw weights).
    """

    def __init__(self, modules: dict[str, nn.Module], decay: float) -> None:
        super().__init__()
        if not 0 < decay < 1:
            msg = f"ema_decay must be in (0, 1) to average (0 switches averaging off), got {decay}"
            raise ValueError(msg)
        self.decay = decay
        self.shadow = nn.ModuleDict({name: copy.deepcopy(module) for name, module in modules.items()})
        for parameter in self.shadow.parameters():
            parameter.requires_grad_(False)
        self.register_buffer("averaged_in_model", torch.zeros((), dtype=torch.bool))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def _pairs(self, modules: dict[str, nn.Module]) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
        pairs = []
        for name, module in modules.items():
            shadow = self.shadow[name]
            pairs += [(p, q, True) for p, q in zip(module.parameters(), shadow.parameters(), strict=True)]
            pairs += [(b, c, False) for b, c in zip(module.buffers(), shadow.buffers(), strict=True)]
        return pairs

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module]) -> None:
        """``shadow = d * shadow + (1 - d) * live`` for parameters (``d``: warmed-up decay); copy buffers."""
        if bool(self.averaged_in_model):
            msg = "WeightAverage.update with the averaged weights in the model: swap them out first"
            raise RuntimeError(msg)
        n = int(self.num_updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        for live, shadow, is_parameter in self._pairs(modules):
            if is_parameter and live.is_floating_point():
                shadow.lerp_(live.detach(), 1 - decay)
            else:
                shadow.copy_(live)
        self.num_updates += 1

    @torch.no_grad()
    def swap(self, modules: dict[str, nn.Module]) -> None:
        """Exchange live and averaged values in place and flip ``averaged_in_model``."""
        for live, shadow, _ in self._pairs(modules):
            held = live.detach().clone()
            live.copy_(shadow)
            shadow.copy_(held)
        self.averaged_in_model.fill_(not bool(self.averaged_in_model))


@torch.no_grad()
def recompute_batchnorm(modules: list[nn.Module], run: Callable[[], None]) -> None:
    """Re-estimate the BatchNorm statistics of ``modules`` as the cumulative average over ``run()``.

    ``run`` feeds the training images through the networks (in training mode here); the statistics
    then belong to the weights in the model (the averaged ones), not to the live ones' history.
    """
    norms = [
        m for module in modules for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    states = [(module, module.training) for module in modules]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    try:
        for module, _ in states:
            module.train()
        run()
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        for module, training in states:
            module.train(training)


def averaged_networks(model: nn.Module, scope: str) -> dict[str, nn.Module]:
    """Name the networks ``ema_scope`` averages: the generator, and with ``"both"`` the critic."""
    networks: dict[str, nn.Module] = {"generator": model.generator}
    if scope == "both":
        networks["discriminator"] = model.discriminator
    return networks


def build_weight_average(model: nn.Module, decay: float, scope: str) -> WeightAverage | None:
    """Build the EMA shadow of the averaged networks, or ``None`` when ``decay`` is 0 (paper)."""
    if scope not in SCOPES:
        msg = f"ema_scope must be one of {SCOPES}, got {scope!r}"
        raise ValueError(msg)
    return WeightAverage(averaged_networks(model, scope), decay) if decay else None
