"""What every unlearning method receives, and the pieces they share.

A method is a function ``unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> None`` that modifies
``task.model`` in place. Methods are registered by name in :mod:`unlearn` (the registry).
Iterative methods build their optimizer with :func:`make_unlearn_optimizer` (SGD or AdamW per
``--unlearn_optimizer``, optionally SAM; DESIGN.md §7.4) and draw batches with :func:`batches`
(augmented per ``--no_aug``; DESIGN.md §7.5).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from trainer.fit import Recipe
from trainer.optim import SamConfig, make_optimizer
from trainer.schedule import multistep
from utils.batches import Batch, iterate
from utils.data import ImageData


@dataclass
class UnlearnTask:
    model: nn.Module  # the original model (retrain: a fresh initialization), modified in place
    data: ImageData  # tensors already on ``device``
    forget_ids: np.ndarray  # global ids
    retain_ids: np.ndarray  # global ids
    device: torch.device
    seed: int
    generator: torch.Generator = field(default_factory=torch.Generator)  # order, augmentation, random labels


@dataclass
class UnlearnConfig:
    lr: float = 0.01
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "sgd"  # sgd | adamw
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = (91, 136)
    augment: bool = True
    sam: SamConfig | None = None
    separate: tuple[str, str] | None = None  # Sharp MinMax SAM signs (retain step, forget step)
    mask: dict[str, torch.Tensor] | None = None  # saliency mask, True = salient
    alpha: float = 0.99
    beta: float | None = None
    gamma: float | None = None
    msteps: int | None = None
    kd_T: float | None = None
    no_l1_epochs: int = 0
    recipe: Recipe | None = None  # the pretraining recipe (retrain)


UnlearnFn = Callable[[UnlearnTask, UnlearnConfig], None]


def make_unlearn_optimizer(params, cfg: UnlearnConfig, *, sam: SamConfig | None = None,
                           use_sam: bool = True) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The unlearning optimizer (``--unlearn_optimizer``, ``--unlearn_lr``) and its MultiStepLR
    (``--decreasing_lr``, gamma 0.1; upstream-spec §5.7). ``sam`` overrides ``cfg.sam``."""
    s = (sam if sam is not None else cfg.sam) if use_sam else None
    opt = make_optimizer(params, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay, sam=s)
    return opt, multistep(opt, list(cfg.milestones))


def batches(task: UnlearnTask, ids: np.ndarray, cfg: UnlearnConfig, *, shuffle: bool = True,
            augment: bool | None = None, labels: torch.Tensor | None = None) -> Iterator[Batch]:
    """Batches of ``ids`` with the task's generator; augmented when ``cfg.augment``."""
    aug = cfg.augment if augment is None else augment
    return iterate(task.data.x, task.data.y, ids, cfg.batch_size, shuffle=shuffle, generator=task.generator,
                   device=task.device, augment=task.data.augment if aug else None, labels=labels)
