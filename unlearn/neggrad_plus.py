"""``NG`` (NegGrad+), and Sharp MinMax (``--separate A B`` with a saliency mask).

Sources: NegGrad+ of Kurmanji et al. 2023 as in RUM (rum-spec §1.5); Sharp MinMax of Tang &
Khanna, "Sharpness-Aware Machine Unlearning" (upstream-spec §5.9 "NG", §5.10).

One epoch = one shuffled pass over the retain set; each retain batch is paired with the next
forget batch, the forget set being cycled when it runs out:

* default: each pass over the forget set is a fresh shuffle (new order, new augmentation), which
  is what a second pass of a shuffled loader means (:func:`cycle_batches`);
* ``--release``: the release's ``zip(retain_loader, itertools.cycle(forget_loader))``, built anew
  every epoch: the first pass is drawn (shuffled, augmented) and cached, and every later pass of
  that epoch replays exactly those batches, same order and same augmented tensors
  (:func:`replay_batches`; upstream-spec §5.9 "NG", §11.1-12).

Plain NegGrad+ (no ``--separate``), per iteration, one optimizer step on

    L = alpha * CE(f(x_r), y_r) - (1 - alpha) * CE(f(x_f), y_f)          (alpha = --alpha, default 0.99)

SAM (``--sam``) takes the SAM step on the same L. A saliency mask, if given, is a hard constraint
(DESIGN.md §7.6). ``--release``: the mask multiplies the gradient of a plain step (weight decay
still moves masked weights), and under SAM it is not applied at all (upstream-spec §5.9, §5.10).

Sharp MinMax (``--separate A B``, needs a mask ``M``, True = salient): two optimizers on the same
model, each with its own state; per iteration two sub-steps:

    (1) retain step on  L_r =  alpha * CE(f(x_r), y_r)      over the NON-salient weights (~M),
        SAM with sign A (when --sam is given; plain steps otherwise);
    (2) forget step on  L_f = -(1 - alpha) * CE(f(x_f), y_f) over the salient weights (M),
        at the weights left by (1), fresh forward, SAM with sign B.

In both modes the SAM perturbation of each sub-step is computed from the full gradient over all
weights, ``e = rho a^2 g0 / ||a g0||`` (trainer/sam.py). What the part restricts:

* default (hard split, DESIGN.md §7.6): ``g = P * (g0 + s lamb (g1 - g0))`` with P = ~M resp. M, and
  a sub-step never moves the weights outside its part, not through weight decay or momentum
  (trainer.step.optimizer_step with a plain mask);
* ``--release`` (upstream-spec §5.9): ``g = g0 + s lamb (P * g1 - g0)`` and nothing is restored:
  with sign ``max`` and lamb = 1 the forget step gives the NON-salient weights ``2 g0`` too, and
  both AdamW instances apply their decoupled weight decay to all weights (twice per iteration;
  trainer.mask.ReleaseMask). Without ``--sam``: ``g = P * grad`` and again weight decay on all.

Both schedulers (MultiStepLR) step once per epoch.
"""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.device import autocast
from trainer.mask import Mask, ReleaseMask, complement
from trainer.optim import SamConfig
from trainer.step import optimizer_step
from unlearn.base import (SeenAccuracy, UnlearnConfig, UnlearnTask, batches, emit, history_row,
                          make_unlearn_optimizer)
from utils.batches import Batch, num_batches


def _ce(model: nn.Module, b: Batch, device: torch.device, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    with autocast(device, precision):
        out = model(b.x)
    return F.cross_entropy(out.float(), b.y), out


def ng_loss(model: nn.Module, br: Batch, bf: Batch, alpha: float,
            device: torch.device | str = "cpu", precision: str = "fp32", *,
            forget_out: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``alpha * CE(retain batch) - (1 - alpha) * CE(forget batch)`` and the retain logits; the
    forget logits are appended to ``forget_out`` when given (the history's forget accuracy)."""
    device = torch.device(device)
    ce_r, out_r = _ce(model, br, device, precision)
    ce_f, out_f = _ce(model, bf, device, precision)
    if forget_out is not None:
        forget_out.append(out_f.detach())
    return alpha * ce_r - (1.0 - alpha) * ce_f, out_r


def cycle_batches(task: UnlearnTask, ids: np.ndarray, cfg: UnlearnConfig) -> Iterator[Batch]:
    """Endless batches of ``ids``, reshuffled on every pass."""
    if len(ids) == 0:
        raise ValueError("NG needs a non-empty forget set")
    while True:
        yield from batches(task, ids, cfg)


def replay_batches(task: UnlearnTask, ids: np.ndarray, cfg: UnlearnConfig) -> Iterator[Batch]:
    """Endless batches of ``ids`` as ``itertools.cycle`` over a shuffled loader gives them (the
    release): batch k of the first pass is drawn lazily and cached; batch ``n + k`` (n = batches
    per pass) is the cached batch k, the same tensors."""
    if len(ids) == 0:
        raise ValueError("NG needs a non-empty forget set")
    cache: list[Batch] = []
    for b in batches(task, ids, cfg):
        cache.append(b)
        yield b
    while True:
        yield from cache


def forget_stream(task: UnlearnTask, cfg: UnlearnConfig) -> Iterator[Batch]:
    """One epoch's forget batches: :func:`replay_batches` with ``cfg.release``, else
    :func:`cycle_batches`."""
    return (replay_batches if cfg.release else cycle_batches)(task, task.forget_ids, cfg)


def minmax_step(model: nn.Module, opt_retain: torch.optim.Optimizer, opt_forget: torch.optim.Optimizer,
                br: Batch, bf: Batch, alpha: float, mask: Mask,
                device: torch.device | str = "cpu",
                precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Sharp MinMax iteration (see the module docstring); returns (L_r, L_f, retain logits,
    forget logits), each of its sub-step's clean pass.
    ``mask``'s kind decides the semantics: a plain mapping = hard split, a
    :class:`trainer.mask.ReleaseMask` = the release's (``--release``)."""
    device = torch.device(device)

    def retain_closure():
        ce, out = _ce(model, br, device, precision)
        return alpha * ce, out

    def forget_closure():
        ce, out = _ce(model, bf, device, precision)
        return -(1.0 - alpha) * ce, out

    loss_r, out_r = optimizer_step(model, opt_retain, retain_closure, trainable=complement(mask))
    loss_f, out_f = optimizer_step(model, opt_forget, forget_closure, trainable=mask)
    return loss_r, loss_f, out_r, out_f


def _sam_with_sign(cfg: UnlearnConfig, sign: str) -> SamConfig | None:
    if cfg.sam is None:
        return None
    return SamConfig(sign=sign, rho=cfg.sam.rho, lamb=cfg.sam.lamb, adaptive=cfg.sam.adaptive)


def plain_ng_mask(cfg: UnlearnConfig) -> Mask | None:
    """The mask of plain NegGrad+: ``cfg.mask`` (hard), or with ``--release`` the release's: a
    :class:`trainer.mask.ReleaseMask` on plain steps and none at all under SAM (upstream-spec
    §5.9 "SAM, no separate: mask not applied at all")."""
    if cfg.mask is None or not cfg.release:
        return cfg.mask
    return None if cfg.sam is not None else ReleaseMask(cfg.mask)


def unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> list[dict]:
    model, device, alpha = task.model, torch.device(task.device), float(cfg.alpha)
    separate = cfg.separate is not None
    if separate:
        if cfg.mask is None:
            raise ValueError("NG with --separate (Sharp MinMax) needs a saliency mask (--path)")
        params = dict(model.named_parameters())
        kind = ReleaseMask if cfg.release else dict
        mask = kind({n: cfg.mask[n].to(params[n].device).bool() if n in cfg.mask
                     else torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()})
        a, b = cfg.separate
        opt_r, sched_r = make_unlearn_optimizer(model.parameters(), cfg, sam=_sam_with_sign(cfg, a),
                                                use_sam=cfg.sam is not None)
        opt_f, sched_f = make_unlearn_optimizer(model.parameters(), cfg, sam=_sam_with_sign(cfg, b),
                                                use_sam=cfg.sam is not None)
        scheds = [sched_r, sched_f]
    else:
        opt, sched = make_unlearn_optimizer(model.parameters(), cfg)
        scheds = [sched]
        trainable = plain_ng_mask(cfg)
    steps = num_batches(len(task.retain_ids), cfg.batch_size)
    seen = SeenAccuracy(task)
    history: list[dict] = []
    for epoch in range(cfg.epochs):
        model.train()
        t0, lr = time.perf_counter(), scheds[0].get_last_lr()[0]
        forget_iter = forget_stream(task, cfg)
        loss_sum = torch.zeros((), device=device)
        parts = torch.zeros(2, device=device)  # Sharp MinMax: the retain and forget sub-step losses
        seen_n = 0
        for br in batches(task, task.retain_ids, cfg):
            bf = next(forget_iter)
            if separate:
                lr_, lf_, out, out_f = minmax_step(model, opt_r, opt_f, br, bf, alpha, mask, device, cfg.precision)
                loss = lr_ + lf_
                parts += torch.stack([lr_, lf_]).detach() * len(br.y)
            else:
                outs_f: list = []  # the clean pass first (then SAM's perturbed one)
                loss, out = optimizer_step(model, opt, lambda br=br, bf=bf: ng_loss(
                    model, br, bf, alpha, device, cfg.precision, forget_out=outs_f), trainable=trainable)
                out_f = outs_f[0] if outs_f else None
            n = len(br.y)
            loss_sum += loss * n
            seen.update(br.ids, out)
            if out_f is not None:
                seen.update(bf.ids, out_f)
            seen_n += n
        for s in scheds:
            s.step()
        seen_n = max(seen_n, 1)
        extra = dict(zip(("retain_loss", "forget_loss"), (parts / seen_n).tolist())) if separate else {}
        row = history_row(epoch, lr, float(loss_sum) / seen_n, seen.result(), t0, **extra)
        emit(cfg, row, history)
        print(f"NG{' (Sharp MinMax)' if separate else ''} epoch {epoch + 1}/{cfg.epochs} loss {row['loss']:.4f} "
              f"retain acc {100 * row.get('retain_acc', 0.0):.2f}% forget acc {100 * row.get('forget_acc', 0.0):.2f}% "
              f"({steps} steps)")
    return history
