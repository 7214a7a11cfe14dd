"""SCRUB: teacher-student max/min distillation. Kurmanji et al., "Towards Unbounded Machine
Unlearning", NeurIPS 2023; the update as in upstream-spec §5.9 (the SalUn / Unlearn-Sparse port used
by sharp-unlearn and RUM) and rum-spec §1.5.

Student = ``task.model`` (train mode, updated in place); teacher = a frozen copy of the model taken
at the start (eval mode, no gradient). For epoch e = 0 .. epochs-1::

    if e <= msteps:   one pass over shuffled forget batches (x, y):   L = -KL_T(student(x), teacher(x))   (max step)
    then              one pass over shuffled retain batches (x, y):   L = gamma * CE(student(x), y)
                                                                        + beta * KL_T(student(x), teacher(x))   (min step)

with ``KL_T(s, t) = T^2 / B * sum_batch sum_classes p_t (log p_t - log softmax(s / T))``,
``p_t = softmax(t / T)`` (:func:`unlearn.losses.distill_kl`). One optimizer (built over the student)
serves both passes and carries its state across them; the LR schedule steps once per epoch.

Max-step count: the original tests ``epoch <= msteps``, so the max step runs in epochs 0..msteps,
i.e. ``min(epochs, msteps + 1)`` times, not ``msteps`` times. This is replicated.

Flags and defaults: ``--msteps``, ``--kd_T``, ``--gamma``, ``--beta`` had no default in the original
(None -> crash). Here a flag left unset takes :data:`DEFAULTS`: msteps 4 and kd_T 4.0 from RUM's
README (rum-spec §1.5, with lr 5e-3 and 5 epochs), gamma 0.99 and beta 0.001 from the SCRUB paper's
CIFAR settings (its code names the KL weight ``alpha`` = 0.001 and the CE weight ``gamma`` = 0.99; the
port's ``beta`` multiplies the KL term, so beta = 0.001 here).

SAM (``--sam``): a SAM step on the same objective; the teacher's logits are computed once per batch
(the teacher is deterministic in eval mode, so re-evaluating it at the same inputs, as the original
does, gives the same values). A saliency mask (``--path``), absent from the original's SCRUB, is
honoured as a hard constraint like in every method here. Augmentation follows ``--no_aug``.
"""
from __future__ import annotations

import copy
import time
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from trainer.device import autocast
from trainer.mask import Mask
from trainer.step import optimizer_step
from unlearn.base import UnlearnConfig, UnlearnTask, batches, emit, history_row, make_unlearn_optimizer
from unlearn.losses import distill_kl
from utils.batches import Batch, num_batches

# Values used when the flag is None (see the module docstring for their sources).
DEFAULTS: dict[str, float] = {"msteps": 4, "kd_T": 4.0, "gamma": 0.99, "beta": 0.001}


def resolve(cfg: UnlearnConfig) -> tuple[int, float, float, float]:
    """``(msteps, kd_T, gamma, beta)``: the flags, or :data:`DEFAULTS` where a flag is None."""
    msteps = DEFAULTS["msteps"] if cfg.msteps is None else cfg.msteps
    kd_T = DEFAULTS["kd_T"] if cfg.kd_T is None else cfg.kd_T
    gamma = DEFAULTS["gamma"] if cfg.gamma is None else cfg.gamma
    beta = DEFAULTS["beta"] if cfg.beta is None else cfg.beta
    return int(msteps), float(kd_T), float(gamma), float(beta)


def distill_pass(student: nn.Module, teacher: nn.Module, optimizer: torch.optim.Optimizer,
                 batch_iter: Iterable[Batch], *, mode: str, kd_T: float, gamma: float = 0.0,
                 beta: float = 0.0, trainable: Mask | None = None, device: torch.device = torch.device("cpu"),
                 total: int | None = None, precision: str = "fp32") -> dict[str, float]:
    """One pass of SCRUB: ``mode="max"`` (L = -KL_T) or ``mode="min"`` (L = gamma CE + beta KL_T).
    Returns the mean loss and accuracy of the clean student forward passes."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    student.train()
    teacher.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for b in tqdm(batch_iter, total=total, desc=f"scrub {mode}", leave=False, disable=None):
        with torch.no_grad(), autocast(device, precision):
            t_logits = teacher(b.x).float()

        scale = getattr(b, "scale", 1.0)  # data-parallel slice of a global batch (utils.batches)

        def closure(b=b, t_logits=t_logits, scale=scale):
            with autocast(device, precision):
                out = student(b.x)
            out = out.float()
            kl = distill_kl(out, t_logits, kd_T)
            loss = -kl if mode == "max" else gamma * F.cross_entropy(out, b.y) + beta * kl
            return (loss * scale if scale != 1.0 else loss), out

        loss, logits = optimizer_step(student, optimizer, closure, trainable=trainable)
        if scale != 1.0:
            loss = loss / scale
        n = len(b.y)
        loss_sum += float(loss) * n
        correct += int((logits.argmax(1) == b.y).sum())
        seen += n
    seen = max(seen, 1)
    return {"loss": loss_sum / seen, "acc": correct / seen}


def unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> list[dict]:
    """SCRUB max/min distillation against a frozen copy of the starting model (module docstring).
    Returns the history: per epoch the min pass's loss and retain accuracy, and in the epochs with
    a max pass its loss (``max_loss`` = -KL) and forget accuracy; each row also goes to ``cfg.on_epoch``."""
    msteps, kd_T, gamma, beta = resolve(cfg)
    student = task.model
    teacher = copy.deepcopy(student).eval()
    teacher.requires_grad_(False)
    opt, sched = make_unlearn_optimizer(student.parameters(), cfg)
    common = dict(kd_T=kd_T, gamma=gamma, beta=beta, trainable=cfg.mask, device=task.device,
                  precision=cfg.precision)
    forget_ids, retain_ids = np.asarray(task.forget_ids), np.asarray(task.retain_ids)
    history: list[dict] = []
    for epoch in range(cfg.epochs):
        t0, lr, seen = time.perf_counter(), opt.param_groups[0]["lr"], {}
        if epoch <= msteps:  # the original's condition: msteps + 1 max passes
            s = distill_pass(student, teacher, opt, batches(task, forget_ids, cfg), mode="max",
                             total=num_batches(len(forget_ids), cfg.batch_size), **common)
            print(f"[SCRUB] epoch {epoch} max: -KL {s['loss']:.4f}  forget acc {100 * s['acc']:.2f}%")
            seen = {"max_loss": s["loss"], "forget_acc": s["acc"]}
        s = distill_pass(student, teacher, opt, batches(task, retain_ids, cfg), mode="min",
                         total=num_batches(len(retain_ids), cfg.batch_size), **common)
        print(f"[SCRUB] epoch {epoch} min: loss {s['loss']:.4f}  retain acc {100 * s['acc']:.2f}%")
        sched.step()
        emit(cfg, history_row(epoch, lr, s["loss"], {"retain_acc": s["acc"], **seen}, t0), history)
    return history
