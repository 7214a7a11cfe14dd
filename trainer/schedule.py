"""Learning-rate schedules, stepped once per epoch (upstream-spec §3.1).

cosine_with_warmup: factor (e + 1) / warmup for e < warmup, then 1/2 (1 + cos(pi (e - warmup) /
(epochs - warmup))); with warmup = 0 this is CosineAnnealingLR(T_max = epochs, eta_min = 0).
"""
from __future__ import annotations

import math

import torch


def cosine_factor(epoch: int, epochs: int, warmup: int = 0) -> float:
    if epoch < warmup:
        return (epoch + 1) / warmup
    span = max(epochs - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / span))


def cosine_with_warmup(optimizer: torch.optim.Optimizer, epochs: int, warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: cosine_factor(e, epochs, warmup))


def multistep(optimizer: torch.optim.Optimizer, milestones: list[int], gamma: float = 0.1) -> torch.optim.lr_scheduler.MultiStepLR:
    """The unlearning schedule of the original (``--decreasing_lr``, gamma 0.1; upstream-spec §5.7)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
