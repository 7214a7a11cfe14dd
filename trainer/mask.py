"""Parameter masks (DESIGN.md §5, §7.6; upstream-spec §2.3, §5.9, §5.10).

A mask maps parameter names to boolean tensors of the parameter's shape; ``True`` = the entry may
move. How :func:`trainer.step.optimizer_step` applies it depends on the mask's type:

* a plain mapping is a **hard constraint** (our default, DESIGN.md §7.6): masked-out entries never
  move, not through the gradient, weight decay, momentum or the SAM step. The SAM perturbation is
  computed from the full gradient over all weights (as the original); the mask multiplies the
  final gradient ``M * (g0 + s lamb (g1 - g0))``, and after the optimizer step the masked-out
  entries are restored bitwise (so weight decay and stale momentum cannot move them either).
* a :class:`ReleaseMask` has the sharp-unlearn release's semantics (``--release``): it multiplies
  the gradient (plain step) or only the perturbed gradient g1 (SAM: ``g0 + s lamb (M g1 - g0)``);
  nothing is restored, so the optimizer may still move masked-out entries: decoupled weight
  decay, Adam/momentum state, and under sign ``max`` the leak ``(1 + lamb) g0`` (upstream-spec
  §5.9 "NG", §11.1-8, -9).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

Mask = Mapping[str, torch.Tensor]


class ReleaseMask(dict):
    """A mask with the release's (soft) semantics; see the module docstring."""


def is_release_mask(mask: Mask | None) -> bool:
    return isinstance(mask, ReleaseMask)


def same_kind(mask: Mask, entries: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``entries`` as a mask of the same kind (hard or release) as ``mask``."""
    return ReleaseMask(entries) if is_release_mask(mask) else dict(entries)


def complement(mask: Mask) -> dict[str, torch.Tensor]:
    """``~mask`` entry-wise, of the same kind as ``mask``."""
    return same_kind(mask, {k: ~v.bool() for k, v in mask.items()})


def on_device(model: nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    """The mask's entries as boolean tensors on their parameters' devices, of the same kind."""
    params = dict(model.named_parameters())
    return same_kind(mask, {n: m.to(params[n].device).bool() if n in params else m.bool() for n, m in mask.items()})


def check_mask(model: nn.Module, mask: Mask) -> None:
    """Raise ValueError naming the first parameter the mask does not fit."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        if name not in params:
            raise ValueError(f"mask entry {name!r} is not a parameter of the model")
        if tuple(m.shape) != tuple(params[name].shape):
            raise ValueError(f"mask entry {name!r} has shape {tuple(m.shape)}, parameter has {tuple(params[name].shape)}")


def mask_grads_(model: nn.Module, mask: Mask | None) -> None:
    """``p.grad *= mask[name]`` for every parameter the mask names (others untouched)."""
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
