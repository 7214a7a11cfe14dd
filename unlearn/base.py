"""What every unlearning method receives, and the pieces they share.

A method is a function ``unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> None`` that modifies
``task.model`` in place. Methods are registered by name in :mod:`unlearn` (the registry).
Iterative methods build their optimizer with :func:`make_unlearn_optimizer` (SGD or AdamW per
``--unlearn_optimizer``, optionally SAM; DESIGN.md §7.4) and draw batches with :func:`batches`
(augmented per ``--no_aug``; DESIGN.md §7.5).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.distributed import DistInfo
from trainer.fit import Recipe
from trainer.loop import train_epoch
from trainer.optim import SamConfig, make_optimizer
from trainer.schedule import multistep
from utils.batches import Batch, iterate, num_batches
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
    lr: float = 0.01  # --unlearn_lr
    epochs: int = 10  # --unlearn_epochs
    batch_size: int = 256  # --batch_size
    optimizer: str = "sgd"  # --unlearn_optimizer: sgd | adamw
    momentum: float = 0.9  # --momentum (sgd)
    weight_decay: float = 5e-4  # --weight_decay
    milestones: tuple[int, ...] = (91, 136)  # --decreasing_lr: MultiStepLR milestones (gamma 0.1), per epoch
    augment: bool = True  # not --no_aug
    sam: SamConfig | None = None  # --sam --rho --lamb --adaptive
    separate: tuple[str, str] | None = None  # Sharp MinMax SAM signs (retain step, forget step)
    mask: dict[str, torch.Tensor] | None = None  # saliency mask, True = salient (may move)
    alpha: float = 0.99  # NG retain weight; FT_l1 L1 strength; wfisher scale
    beta: float | None = None  # SCRUB KL weight
    gamma: float | None = None  # SCRUB CE weight
    msteps: int | None = None  # SCRUB max-step epochs
    kd_T: float | None = None  # SCRUB temperature
    no_l1_epochs: int = 0  # FT_l1: last epochs without L1
    precision: str = "fp32"  # resolved --precision of the training forward passes: fp32 | bf16
    release: bool = False  # --release: the sharp-unlearn release's behaviour (DESIGN.md §7.8)
    recipe: Recipe | None = None  # the training recipe (retrain)
    run_dir: Path | None = None  # retrain: checkpoint every epoch here
    resume: bool = False  # retrain: continue from run_dir's checkpoint
    dist_info: DistInfo = field(default_factory=DistInfo)  # retrain: data-parallel under torchrun


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


def run_epochs(task: UnlearnTask, cfg: UnlearnConfig, name: str,
               epoch_set: Callable[[int], tuple[np.ndarray, torch.Tensor | None]], *,
               loss_fn: Callable[[int], Callable] = lambda epoch: F.cross_entropy,
               trainable: dict[str, torch.Tensor] | None = None,
               report: Callable[[int, dict], str | None] | None = None) -> list[dict]:
    """The epoch loop of the fine-tuning style methods (FT, GA, FT_l1, RL_og, SalUn): the
    unlearning optimizer and its MultiStepLR; per epoch one shuffled pass over
    ``epoch_set(epoch) -> (ids, labels or None)`` with the loss ``loss_fn(epoch)`` (cross-entropy),
    then one scheduler step and the line ``report(epoch, stats)`` (if any). Returns the per-epoch
    ``{"loss", "acc"}``."""
    opt, sched = make_unlearn_optimizer(task.model.parameters(), cfg)
    history = []
    for epoch in range(cfg.epochs):
        ids, labels = epoch_set(epoch)
        stats = train_epoch(task.model, opt, batches(task, ids, cfg, labels=labels), loss_fn=loss_fn(epoch),
                            trainable=trainable,
                            device=task.device, total=num_batches(len(ids), cfg.batch_size),
                            desc=f"{name} {epoch + 1}/{cfg.epochs}", precision=cfg.precision)
        sched.step()
        line = report(epoch, stats) if report is not None else None
        if line:
            print(line)
        history.append(stats)
    return history
