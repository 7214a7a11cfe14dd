"""Optimizer construction: SGD or AdamW, optionally wrapped in SAM (DESIGN.md §5, §7.4).

AdamW is the sharp-unlearn release's unlearning optimizer (upstream-spec §2.5, §5.7-3):
``AdamW(params, lr=--unlearn_lr, weight_decay=--weight_decay)`` with torch's defaults for the rest,
written out here (:data:`ADAMW_DEFAULTS`): betas (0.9, 0.999), eps 1e-8, no amsgrad; the decay is
decoupled, ``w <- w - lr * wd * w`` before the Adam update (Loshchilov & Hutter 2019).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from trainer.sam import SAM


ADAMW_DEFAULTS = dict(betas=(0.9, 0.999), eps=1e-8, amsgrad=False)


@dataclass(frozen=True)
class SamConfig:
    """``--sam min|max --rho --lamb --adaptive``."""

    sign: str = "min"
    rho: float = 0.1
    lamb: float = 1.0
    adaptive: bool = False

    def tag(self) -> str:
        return f"sam-{self.sign}_rho{self.rho:g}_lamb{self.lamb:g}" + ("_adaptive" if self.adaptive else "")


def make_optimizer(params: Iterable[torch.nn.Parameter], kind: str = "sgd", *, lr: float,
                   momentum: float = 0.9, weight_decay: float = 5e-4,
                   sam: SamConfig | None = None) -> torch.optim.Optimizer:
    """``kind`` = sgd (momentum, weight decay) or adamw (decoupled weight decay, the release's
    settings: :data:`ADAMW_DEFAULTS`; ``momentum`` unused)."""
    if kind == "sgd":
        base, kw = torch.optim.SGD, dict(lr=lr, momentum=momentum, weight_decay=weight_decay)
    elif kind == "adamw":
        base, kw = torch.optim.AdamW, dict(lr=lr, weight_decay=weight_decay, **ADAMW_DEFAULTS)
    else:
        raise ValueError(f"unknown optimizer {kind!r}")
    if sam is None:
        return base(params, **kw)
    return SAM(params, base, sign=sam.sign, rho=sam.rho, lamb=sam.lamb, adaptive=sam.adaptive, **kw)
