"""Sharpness-aware minimization with the sharp-unlearn extensions (min/max sign, lambda).

Foret et al. 2021 (SAM), Kwon et al. 2021 (ASAM), Tang & Khanna 2025 (sign and lambda);
upstream-spec §2, DESIGN.md §5.

First step, at weights w with gradient g0:
    e = rho * a^2 * g0 / || a * g0 ||,  a = |w| if adaptive else 1     (norm over all parameters)
    w <- w + e
Second step, with gradient g1 computed at w + e:
    g = g0 + s * lamb * (g1 - g0),  s = +1 for "min", -1 for "max"
    w <- w (restored), then the base optimizer steps with g.
min with lamb = 1 is plain SAM (g = g1); max gives (1 + lamb) g0 - lamb g1.

A saliency mask never enters e (the original computes e from the unmasked gradient over all
parameters, upstream-spec §5.9); trainer.step.optimizer_step applies it to g1 (the release) or to
the final g through ``second_step(final_grad_hook=...)`` (our hard constraint, DESIGN.md §5).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn


class SAM(torch.optim.Optimizer):
    """Wraps a base optimizer; ``param_groups`` are shared so LR schedulers drive the base."""

    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer], *, sign: str = "min",
                 rho: float = 0.05, lamb: float = 1.0, adaptive: bool = False, **base_kwargs) -> None:
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        if sign not in ("min", "max"):
            raise ValueError(f"sign must be 'min' or 'max', got {sign!r}")
        super().__init__(params, dict(rho=rho, lamb=lamb, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.sign = 1.0 if sign == "min" else -1.0

    @torch.no_grad()
    def first_step(self, zero_grad: bool = True) -> None:
        norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                st["old_p"] = p.detach().clone()
                st["g0"] = p.grad.detach().clone()
                e = p.grad * scale
                if group["adaptive"]:
                    e = e * p.square()
                p.add_(e)
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def second_step(self, zero_grad: bool = True, *, final_grad_hook: Callable[[], None] | None = None) -> None:
        """``g = g0 + s lamb (g1 - g0)`` into ``p.grad``, w restored, ``final_grad_hook()`` (e.g.
        masking g), then the base optimizer's step."""
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if not st or "old_p" not in st:
                    continue
                g0 = st.pop("g0")
                g1 = p.grad if p.grad is not None else torch.zeros_like(p)
                p.grad = g0 + self.sign * group["lamb"] * (g1 - g0)
                p.copy_(st.pop("old_p"))
        if final_grad_hook is not None:
            final_grad_hook()
        # Through self.step (not base_optimizer.step directly) so that an LR scheduler, which
        # wraps ``optimizer.step`` to check the call order, sees the step and does not warn.
        self._combined = True
        self.step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def step(self, closure=None):  # noqa: D401 - SAM needs two gradient evaluations
        """The base optimizer's step on the combined gradient; only second_step may call it."""
        if not getattr(self, "_combined", False):
            raise RuntimeError("SAM is driven by first_step/second_step (see trainer.step.optimizer_step)")
        self._combined = False
        return self.base_optimizer.step()

    def _grad_norm(self) -> torch.Tensor:
        norms = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad * p.abs() if group["adaptive"] else p.grad
                norms.append(g.norm(p=2))
        if not norms:
            return torch.tensor(0.0)
        return torch.stack([n.to(norms[0].device) for n in norms]).norm(p=2)

    def state_dict(self):
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalize with batch statistics but leave ``running_mean``,
    ``running_var`` and ``num_batches_tracked`` untouched (the perturbed SAM pass)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True
