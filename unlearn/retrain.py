"""``retrain``: train from scratch on the retain set, the reference every method is scored against.

Update rule: the pretraining loop (:func:`trainer.fit.fit`) on the retain ids, starting from the
fresh initialization ``task.model`` arrives with: per epoch one shuffled pass of cross-entropy
steps, SGD (momentum, weight decay) or SAM(SGD) when ``--sam`` is given, cosine schedule with the
optional warm-up, augmentation per ``--no_aug`` (upstream-spec §5.9 "retrain", DESIGN.md §7.4).

The recipe is ``cfg.recipe`` (built by :mod:`stages.configs` from the pretraining flags with
``--unlearn_epochs`` epochs at ``--unlearn_lr``: the original README tells the user to set those two
like pretraining). Without a recipe, one is made from ``cfg`` itself. The original used its
unlearning optimizer (AdamW) here and a cosine over the *pretraining* epoch count; we follow the
pretraining recipe exactly, which is what the README asks for.

A saliency mask does not apply (a fresh model has no salient weights): the registry marks it
``saliency="never"``, so ``--path`` is refused with retrain. ``cfg.run_dir`` / ``cfg.resume``
make the retrain checkpoint every epoch and continue a killed run with ``--resume``;
``cfg.dist_info`` makes it data-parallel under torchrun (each rank a slice of every global batch).
"""
from __future__ import annotations

from trainer.fit import Recipe, fit
from unlearn.base import UnlearnConfig, UnlearnTask


def recipe_from(cfg: UnlearnConfig) -> Recipe:
    if cfg.recipe is not None:
        return cfg.recipe
    return Recipe(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, momentum=cfg.momentum,
                  weight_decay=cfg.weight_decay, augment=cfg.augment, sam=cfg.sam)


def unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> None:
    fit(task.model, task.data, task.retain_ids, recipe_from(cfg), seed=task.seed, device=task.device,
        run_dir=cfg.run_dir, resume=cfg.resume, desc="retrain", dist_info=cfg.dist_info)
