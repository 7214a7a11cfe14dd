"""One optimizer step, plain or SAM, with an optional hard parameter mask.

``closure()`` runs a forward pass and returns the loss (or ``(loss, aux)``). With SAM it is called
twice: at w and at w + e (BatchNorm statistics frozen on the second call); the returned loss and
aux are those of the clean pass, as in the original code (upstream-spec §2.4).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from trainer.mask import FrozenEntries, Mask, mask_grads_
from trainer.sam import SAM, frozen_bn_stats


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; training cannot go on meaningfully."""


def _split(out) -> tuple[torch.Tensor, Any]:
    return out if isinstance(out, tuple) else (out, None)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                   closure: Callable[[], Any], *, trainable: Mask | None = None) -> tuple[torch.Tensor, Any]:
    """Take one step; returns ``(clean loss (detached), aux)``."""
    frozen = FrozenEntries(model, trainable)
    optimizer.zero_grad(set_to_none=True)
    loss, aux = _split(closure())
    if not torch.isfinite(loss.detach()).all():
        raise NonFiniteLoss(f"loss is {loss.item()}")
    loss.backward()
    mask_grads_(model, trainable)
    if isinstance(optimizer, SAM):
        optimizer.first_step(zero_grad=True)
        with frozen_bn_stats(model):
            loss1, _ = _split(closure())
            loss1.backward()
        mask_grads_(model, trainable)
        optimizer.second_step(zero_grad=True)
    else:
        optimizer.step()
    frozen.restore()
    return loss.detach(), aux
