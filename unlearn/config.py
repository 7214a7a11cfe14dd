"""Run tags and hyperparameter records of unlearning runs, derived from the method registry.

A tag names the run directory (``<ckpts>/unlearn/<forget set>/<model>/<tag>/seed<s>``): the method,
its registered hyperparameters, then for iterative methods ``lr…_ep…`` and the optimizer parts
(the optimizer; batch size, milestones, augmentation and SAM where they differ from the
:class:`unlearn.base.UnlearnConfig` defaults), then the saliency-mask file's stem. Examples:
momentum, weight decay, precision and ``--release`` where they differ from the defaults. Retrain's
tag is its training recipe. Every setting that changes an unlearning result is in its tag or in the
rest of its path (forget set, start model, seed), so two different runs never share a directory
(DESIGN.md §6). Examples: ``FT_lr0.01_ep10_sgd``, ``FT_lr0.01_ep10_sgd_wd0_bf16``,
``NG_alpha0.99_lr0.01_ep5_sgd_sam-min_rho1_lamb1_adaptive_sep-min-max_mask_largest_0.5``,
``retrain_lr0.1_ep50`` (``retrain_lr0.1_ep50_sam-…`` with SAM), ``original``, ``wfisher_alpha0.99``.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from unlearn import METHODS, NOOP
from trainer.fit import Recipe
from unlearn.base import UnlearnConfig
from utils.paths import safe_name

# hparam -> (tag prefix, value format); ``no_l1_epochs`` appears only when non-zero.
TAG_PARTS: dict[str, tuple[str, str]] = {
    "alpha": ("alpha", "{:g}"), "msteps": ("msteps", "{}"), "kd_T": ("kdT", "{:g}"), "beta": ("beta", "{:g}"),
    "gamma": ("gamma", "{:g}"), "no_l1_epochs": ("nol1", "{}"),
}
_DEFAULT = UnlearnConfig()


def optimizer_tag_parts(cfg: UnlearnConfig) -> list[str]:
    """Tag parts every iterative method shares: the optimizer, and batch size, milestones,
    augmentation and SAM where they differ from the defaults."""
    parts = [cfg.optimizer]
    if cfg.batch_size != _DEFAULT.batch_size:
        parts.append(f"bs{cfg.batch_size}")
    if tuple(cfg.milestones) != tuple(_DEFAULT.milestones):
        parts.append("ms" + "-".join(str(x) for x in cfg.milestones))
    if not cfg.augment:
        parts.append("noaug")
    if cfg.sam is not None:
        parts.append(cfg.sam.tag())
    return parts


def setting_parts(cfg: UnlearnConfig) -> list[str]:
    """Momentum, weight decay, precision and ``--release`` where they differ from the defaults."""
    parts = []
    if cfg.momentum != _DEFAULT.momentum:
        parts.append(f"mom{cfg.momentum:g}")
    if cfg.weight_decay != _DEFAULT.weight_decay:
        parts.append(f"wd{cfg.weight_decay:g}")
    if cfg.precision != _DEFAULT.precision:
        parts.append(cfg.precision)
    if cfg.release:
        parts.append("release")
    return parts


def retrain_tag(recipe: Recipe, *, train_seed: int | None = None, seed: int | None = None) -> str:
    """``retrain_lr…_ep…`` and the recipe's other settings where they differ from the defaults
    (batch size, momentum, weight decay, warm-up, augmentation, SAM, an initialization seed other
    than the run's seed, precision)."""
    d = Recipe(epochs=recipe.epochs)
    parts = ["retrain", f"lr{recipe.lr:g}", f"ep{recipe.epochs}"]
    if recipe.batch_size != d.batch_size:
        parts.append(f"bs{recipe.batch_size}")
    if recipe.momentum != d.momentum:
        parts.append(f"mom{recipe.momentum:g}")
    if recipe.weight_decay != d.weight_decay:
        parts.append(f"wd{recipe.weight_decay:g}")
    if recipe.warmup != d.warmup:
        parts.append(f"warm{recipe.warmup}")
    if not recipe.augment:
        parts.append("noaug")
    if recipe.sam is not None:
        parts.append(recipe.sam.tag())
    if train_seed is not None and train_seed != seed:
        parts.append(f"init{train_seed}")
    if recipe.precision != d.precision:
        parts.append(recipe.precision)
    return "_".join(parts)


def mask_tag(mask_file: str | Path) -> str:
    """The tag part of a saliency-mask file: its stem, prefixed with ``mask`` unless it starts so."""
    stem = safe_name(Path(mask_file).name.rsplit(".", 1)[0])
    return stem if stem.startswith("mask") else "mask" + stem


def method_tag(method: str, cfg: UnlearnConfig, mask_file: str | Path | None = None, *,
               train_seed: int | None = None, seed: int | None = None) -> str:
    """The run tag of ``method`` with ``cfg`` (see the module docstring); ``train_seed`` and
    ``seed``: retrain's initialization seed and the run's seed."""
    if method in NOOP:
        return method
    if method == "retrain":
        if cfg.recipe is None:
            raise ValueError("retrain needs cfg.recipe")
        return retrain_tag(cfg.recipe, train_seed=train_seed, seed=seed)
    m = METHODS[method]
    parts = [method]
    for name in m.hparams:
        value = getattr(cfg, name)
        if name == "no_l1_epochs" and not value:
            continue
        prefix, fmt = TAG_PARTS[name]
        parts.append(prefix + fmt.format(value))
    if m.iterative:
        parts += [f"lr{cfg.lr:g}", f"ep{cfg.epochs}"] + optimizer_tag_parts(cfg)
        if cfg.separate:
            parts.append(f"sep-{cfg.separate[0]}-{cfg.separate[1]}")
        parts += setting_parts(cfg)
    if mask_file:
        parts.append(mask_tag(mask_file))
    return "_".join(parts)


def hparams_record(method: str, cfg: UnlearnConfig, *, mask_file: str | None, mask_fraction: float | None,
                   train_seed: int | None = None) -> dict[str, Any]:
    """The ``hparams`` entry of metrics.json: the optimizer settings, the method's registered
    hyperparameters and the mask; for retrain, the training recipe and seed instead."""
    if cfg.recipe is not None:
        r = asdict(cfg.recipe)
        r["sam"] = None if cfg.recipe.sam is None else asdict(cfg.recipe.sam)
        return {"recipe": r, "train_seed": train_seed,
                "schedule": "cosine" + (f" with {cfg.recipe.warmup} warm-up epochs" if cfg.recipe.warmup else "")}
    h: dict[str, Any] = {"lr": cfg.lr, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                         "optimizer": cfg.optimizer, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay,
                         "milestones": list(cfg.milestones), "augment": cfg.augment,
                         "separate": list(cfg.separate) if cfg.separate else None,
                         "mask_file": mask_file, "mask_fraction": mask_fraction}
    h.update({name: getattr(cfg, name) for name in METHODS[method].hparams})
    return h
