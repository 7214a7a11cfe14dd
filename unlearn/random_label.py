"""RL_og: random labelling (upstream-spec §5.9 "RL_og / RL"; SalUn = this with a mask, unlearn/salun.py).

Every epoch:

1. draw a fresh label for each forget example, uniformly over all C classes with
   ``task.generator`` (``torch.randint(0, C)``; the true label may be drawn, as the original's
   ``np.random.randint(0, C)``). The same rule holds for every dataset -- the original silently
   kept the true labels on TinyImageNet;
2. train one pass of cross-entropy over forget (random labels) ∪ retain (true labels), shuffled
   together, in batches of ``cfg.batch_size`` (augmented per ``--no_aug``, DESIGN.md §7.5).

Optimizer: :func:`unlearn.base.make_unlearn_optimizer` (``--unlearn_optimizer``, ``--unlearn_lr``,
SAM per ``cfg.sam``), MultiStepLR stepped once per epoch. A saliency mask (``cfg.mask``, True =
may move) is a hard constraint (DESIGN.md §7.6): masked-out weights never move, not through
weight decay, momentum or the SAM step (:func:`trainer.step.optimizer_step`).
"""
from __future__ import annotations

import numpy as np
import torch

from trainer.mask import Mask, check_mask, on_device
from unlearn.base import UnlearnConfig, UnlearnTask, run_epochs


def random_labels(n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` labels drawn uniformly from ``[0, num_classes)`` (int64, CPU)."""
    return torch.randint(0, int(num_classes), (int(n),), generator=generator, dtype=torch.int64)


def relabelled_epoch_set(task: UnlearnTask) -> tuple[np.ndarray, torch.Tensor]:
    """This epoch's training set: ids = forget ++ retain, labels = fresh random labels for the
    forget part, true labels for the retain part (CPU int64)."""
    forget = np.asarray(task.forget_ids, dtype=np.int64)
    retain = np.asarray(task.retain_ids, dtype=np.int64)
    y = task.data.y
    true_retain = y[torch.as_tensor(retain).to(y.device)].to("cpu", torch.int64)
    labels = torch.cat([random_labels(len(forget), task.data.num_classes, task.generator), true_retain])
    return np.concatenate([forget, retain]), labels


def train_random_labels(task: UnlearnTask, cfg: UnlearnConfig, mask: Mask | None) -> list[dict]:
    """The shared loop of RL_og and SalUn; returns per-epoch ``{"loss", "acc"}`` (accuracy against
    the labels trained on)."""
    model = task.model
    trainable = None
    if mask is not None:
        check_mask(model, mask)
        trainable = on_device(model, mask)
    return run_epochs(task, cfg, "random labels", lambda epoch: relabelled_epoch_set(task), trainable=trainable)


def unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> None:
    """RL_og; uses ``cfg.mask`` when given (``--path``)."""
    train_random_labels(task, cfg, cfg.mask)
