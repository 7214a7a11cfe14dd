"""``FT``: fine-tune on the retain set (catastrophic forgetting of the forget set).

Update rule, per epoch, one shuffled pass over the retain set (upstream-spec §5.9 "FT"; rum-spec
§1.5):  ``L = CE(f(x_r), y_r)``, one optimizer step per batch.

Optimizer: :func:`unlearn.base.make_unlearn_optimizer` (``--unlearn_optimizer`` sgd|adamw at
``--unlearn_lr``; SAM(...) with ``--sam``), MultiStepLR over ``--decreasing_lr`` stepped per
epoch. A saliency mask (``--path``) is a hard constraint (DESIGN.md §7.6). Augmentation per
``--no_aug``.
"""
from __future__ import annotations

from trainer.loop import train_epoch
from unlearn.base import UnlearnConfig, UnlearnTask, batches, make_unlearn_optimizer
from utils.batches import num_batches


def unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> list[dict]:
    opt, sched = make_unlearn_optimizer(task.model.parameters(), cfg)
    history = []
    for epoch in range(cfg.epochs):
        stats = train_epoch(task.model, opt, batches(task, task.retain_ids, cfg), trainable=cfg.mask,
                            device=task.device, total=num_batches(len(task.retain_ids), cfg.batch_size),
                            desc=f"FT {epoch + 1}/{cfg.epochs}")
        sched.step()
        print(f"FT epoch {epoch + 1}/{cfg.epochs} retain loss {stats['loss']:.4f} acc {100 * stats['acc']:.2f}%")
        history.append(stats)
    return history
