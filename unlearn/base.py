"""What every unlearning method receives, and the pieces they share.

A method is a function ``unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> None`` that modifies
``task.model`` in place. Methods are registered by name in :mod:`unlearn` (the registry).
Iterative methods build their optimizer with :func:`make_unlearn_optimizer` (SGD or AdamW per
``--unlearn_optimizer``, optionally SAM; DESIGN.md §7.4) and draw batches with :func:`batches`
(augmented per ``--no_aug``; DESIGN.md §7.5).
"""
from __future__ import annotations

import time
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
    on_epoch: Callable[[dict], None] | None = None  # receives each epoch's history row (the run's log.jsonl)


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


class SeenAccuracy:
    """Accuracy of the clean forward passes on the batches a method trains on, split into the
    retain and the forget examples among them, against the dataset's labels (so random-label
    methods report how many forget examples are still classified correctly). Counts stay on the
    device until :meth:`result`, which also resets them."""

    def __init__(self, task: UnlearnTask) -> None:
        self._is_forget = torch.zeros(len(task.data.y), dtype=torch.bool)  # indexed by global id
        self._is_forget[torch.as_tensor(np.asarray(task.forget_ids, np.int64))] = True
        self._y, self._device = task.data.y, torch.device(task.device)
        self._reset()

    def _reset(self) -> None:
        self._correct = {k: torch.zeros((), device=self._device) for k in ("retain", "forget")}
        self._seen = {"retain": 0, "forget": 0}

    def update(self, ids: torch.Tensor, logits: torch.Tensor) -> None:
        """One batch: its global ids (CPU) and the clean logits."""
        ids = ids.cpu()
        forget = self._is_forget[ids]
        n_forget = int(forget.sum())
        y = self._y[ids.to(self._y.device)].to(logits.device)
        right = logits.detach().argmax(1) == y
        forget = forget.to(logits.device)
        self._correct["forget"] += (right & forget).sum()
        self._correct["retain"] += (right & ~forget).sum()
        self._seen["forget"] += n_forget
        self._seen["retain"] += len(ids) - n_forget

    def result(self) -> dict[str, float]:
        """``{"retain_acc", "forget_acc"}`` over the batches since the last call (a key only when
        such examples were seen)."""
        out = {f"{k}_acc": float(self._correct[k]) / n for k, n in self._seen.items() if n}
        self._reset()
        return out


def history_row(epoch: int, lr: float, loss: float, seen: dict[str, float], t0: float, **extra: float) -> dict:
    """One epoch's row of the run's history (``log.jsonl``): 1-based epoch, the learning rate it
    started with, the mean loss, the accuracies of :class:`SeenAccuracy`, the seconds it took."""
    return {"epoch": epoch + 1, "lr": lr, "loss": loss, **seen, **extra, "seconds": time.perf_counter() - t0}


def emit(cfg: UnlearnConfig, row: dict, history: list[dict]) -> None:
    """Append ``row`` to ``history`` and hand it to ``cfg.on_epoch`` (if any)."""
    history.append(row)
    if cfg.on_epoch is not None:
        cfg.on_epoch(row)


def run_epochs(task: UnlearnTask, cfg: UnlearnConfig, name: str,
               epoch_set: Callable[[int], tuple[np.ndarray, torch.Tensor | None]], *,
               loss_fn: Callable[[int], Callable] = lambda epoch: F.cross_entropy,
               trainable: dict[str, torch.Tensor] | None = None,
               report: Callable[[int, dict], str | None] | None = None) -> list[dict]:
    """The epoch loop of the fine-tuning style methods (FT, GA, FT_l1, RL_og, SalUn): the
    unlearning optimizer and its MultiStepLR; per epoch one shuffled pass over
    ``epoch_set(epoch) -> (ids, labels or None)`` with the loss ``loss_fn(epoch)`` (cross-entropy),
    then one scheduler step and the line ``report(epoch, stats)`` (if any; ``stats``: ``loss`` and
    ``acc`` against the labels trained on). Returns the history: per epoch :func:`history_row`
    (retain and/or forget accuracy on the examples of the pass), each also given to ``cfg.on_epoch``."""
    opt, sched = make_unlearn_optimizer(task.model.parameters(), cfg)
    seen = SeenAccuracy(task)
    history: list[dict] = []
    for epoch in range(cfg.epochs):
        t0, lr = time.perf_counter(), opt.param_groups[0]["lr"]
        ids, labels = epoch_set(epoch)
        stats = train_epoch(task.model, opt, batches(task, ids, cfg, labels=labels), loss_fn=loss_fn(epoch),
                            trainable=trainable, on_batch=lambda b, logits: seen.update(b.ids, logits),
                            device=task.device, total=num_batches(len(ids), cfg.batch_size),
                            desc=f"{name} {epoch + 1}/{cfg.epochs}", precision=cfg.precision)
        sched.step()
        line = report(epoch, stats) if report is not None else None
        if line:
            print(line)
        emit(cfg, history_row(epoch, lr, stats["loss"], seen.result(), t0), history)
    return history
