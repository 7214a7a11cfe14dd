"""Parameter masks as hard constraints (DESIGN.md §5, §7.6).

A mask maps parameter names to boolean tensors of the parameter's shape; ``True`` = the entry may
move. Masked-out entries never move: not through the gradient, weight decay, momentum or the SAM
perturbation. The gradient is masked (so SAM perturbs only free entries and momentum sees no
masked gradient) and, after the optimizer step, frozen entries are restored bitwise.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

Mask = Mapping[str, torch.Tensor]


def complement(mask: Mask) -> dict[str, torch.Tensor]:
    return {k: ~v.bool() for k, v in mask.items()}


def check_mask(model: nn.Module, mask: Mask) -> None:
    """Raise ValueError naming the first parameter the mask does not fit."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        if name not in params:
            raise ValueError(f"mask entry {name!r} is not a parameter of the model")
        if tuple(m.shape) != tuple(params[name].shape):
            raise ValueError(f"mask entry {name!r} has shape {tuple(m.shape)}, parameter has {tuple(params[name].shape)}")


def mask_grads_(model: nn.Module, mask: Mask | None) -> None:
    if mask is None:
        return
    for name, p in model.named_parameters():
        m = mask.get(name)
        if m is not None and p.grad is not None:
            p.grad.mul_(m.to(p.grad.device, p.grad.dtype))


class FrozenEntries:
    """Snapshot of the masked-out entries, restored after an optimizer step."""

    def __init__(self, model: nn.Module, mask: Mask | None) -> None:
        self.saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        if mask is None:
            return
        for name, p in model.named_parameters():
            m = mask.get(name)
            if m is None:
                continue
            m = m.to(p.device).bool()
            if bool(m.all()):
                continue
            self.saved.append((p, m, p.detach().clone()))

    @torch.no_grad()
    def restore(self) -> None:
        for p, m, old in self.saved:
            p.copy_(torch.where(m, p, old))
