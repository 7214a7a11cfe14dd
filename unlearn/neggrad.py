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

from unlearn.base import UnlearnConfig, UnlearnTask, run_epochs


def negative_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(logits, y)


def unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> list[dict]:
    return run_epochs(task, cfg, "GA", lambda epoch: (task.forget_ids, None), loss_fn=lambda epoch: negative_ce,
                      trainable=None if cfg.release and cfg.sam is not None else cfg.mask,
                      report=lambda e, st: f"GA epoch {e + 1}/{cfg.epochs} forget loss {-st['loss']:.4f} "
                                           f"acc {100 * st['acc']:.2f}%")
