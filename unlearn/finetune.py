"""``FT``: fine-tune on the retain set (catastrophic forgetting of the forget set).

Update rule, per epoch, one shuffled pass over the retain set (upstream-spec §5.9 "FT"; rum-spec
§1.5):  ``L = CE(f(x_r), y_r)``, one optimizer step per batch.

Optimizer: :func:`unlearn.base.make_unlearn_optimizer` (``--unlearn_optimizer`` sgd|adamw at
``--unlearn_lr``; SAM(...) with ``--sam``), MultiStepLR over ``--decreasing_lr`` stepped per
epoch. A saliency mask (``--path``) is a hard constraint (DESIGN.md §7.6). Augmentation per
``--no_aug``.
"""
from __future__ import annotations

from unlearn.base import UnlearnConfig, UnlearnTask, run_epochs


def unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> list[dict]:
    return run_epochs(task, cfg, "FT", lambda epoch: (task.retain_ids, None), trainable=cfg.mask,
                      report=lambda e, st: f"FT epoch {e + 1}/{cfg.epochs} retain loss {st['loss']:.4f} "
                                           f"acc {100 * st['acc']:.2f}%")
