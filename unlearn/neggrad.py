"""``GA`` (NegGrad): gradient ascent on the forget set.

Update rule, per epoch, one shuffled pass over the forget set (upstream-spec §5.9 "GA"; rum-spec
§1.5):  ``L = -CE(f(x_f), y_f)``, one optimizer step per batch (descending L ascends the forget
loss).

Optimizer: :func:`unlearn.base.make_unlearn_optimizer` (SGD/AdamW at ``--unlearn_lr``, SAM with
``--sam``), MultiStepLR per epoch. A saliency mask is a hard constraint (DESIGN.md §7.6); the
original applied it after the SAM step, i.e. ignored it with SAM. Augmentation per ``--no_aug``.
The loss is unbounded below: a diverging run raises :class:`trainer.step.NonFiniteLoss`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.loop import train_epoch
from unlearn.base import UnlearnConfig, UnlearnTask, batches, make_unlearn_optimizer
from utils.batches import num_batches


def negative_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(logits, y)


def unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> list[dict]:
    opt, sched = make_unlearn_optimizer(task.model.parameters(), cfg)
    history = []
    for epoch in range(cfg.epochs):
        stats = train_epoch(task.model, opt, batches(task, task.forget_ids, cfg), loss_fn=negative_ce,
                            trainable=cfg.mask, device=task.device,
                            total=num_batches(len(task.forget_ids), cfg.batch_size), desc=f"GA {epoch + 1}/{cfg.epochs}")
        sched.step()
        print(f"GA epoch {epoch + 1}/{cfg.epochs} forget loss {-stats['loss']:.4f} acc {100 * stats['acc']:.2f}%")
        history.append(stats)
    return history
