"""One optimizer step, plain or SAM, with an optional parameter mask.

``closure()`` runs a forward pass and returns the loss (or ``(loss, aux)``). With SAM it is called
twice: at w and at w + e (BatchNorm statistics frozen on the second call); the returned loss and
aux are those of the clean pass, as in the original code (upstream-spec §2.4).

Masks (trainer/mask.py; M = the mask, True = may move; s = +1 min / -1 max):

    plain step, either kind:   g = M * grad L(w)
    SAM, hard mask (default):  e = rho a^2 g0 / ||a g0|| over ALL weights (g0 unmasked),
                               g = M * (g0 + s lamb (g1 - g0)),
                               then masked-out entries restored bitwise after the step
                               (DESIGN.md §5, §7.6: no move through weight decay, momentum, SAM)
    SAM, ReleaseMask:          e as above, g = g0 + s lamb (M * g1 - g0), nothing restored
                               (upstream-spec §5.9: "T = *M" on the perturbed gradient)
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from trainer.mask import FrozenEntries, Mask, is_release_mask, mask_grads_
from trainer.sam import SAM, frozen_bn_stats


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; training cannot go on meaningfully."""


def _split(out) -> tuple[torch.Tensor, Any]:
    return out if isinstance(out, tuple) else (out, None)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                   closure: Callable[[], Any], *, trainable: Mask | None = None) -> tuple[torch.Tensor, Any]:
    """Take one step; returns ``(clean loss (detached), aux)``. ``trainable``: the mask (see the
    module docstring for how each kind applies)."""
    release = is_release_mask(trainable)
    frozen = FrozenEntries(model, None if release else trainable)
    optimizer.zero_grad(set_to_none=True)
    loss, aux = _split(closure())
    if not torch.isfinite(loss.detach()).all():
        raise NonFiniteLoss(f"loss is {loss.item()}")
    loss.backward()
    if isinstance(optimizer, SAM):
        optimizer.first_step(zero_grad=True)  # e from the unmasked g0, over all weights
        with frozen_bn_stats(model):
            loss1, _ = _split(closure())
            loss1.backward()
        if release:
            mask_grads_(model, trainable)  # T(g1) = M * g1
            optimizer.second_step(zero_grad=True)
        else:
            optimizer.second_step(zero_grad=True, final_grad_hook=lambda: mask_grads_(model, trainable))
    else:
        mask_grads_(model, trainable)
        optimizer.step()
    frozen.restore()
    return loss.detach(), aux
