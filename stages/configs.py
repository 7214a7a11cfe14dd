"""Flags -> typed configs: the one place an argparse Namespace becomes plain values.

Every library function below ``stages/`` takes what these return (``SamConfig``, ``Recipe``,
``UnlearnConfig``, ``ForgetSpec``, paths), never the Namespace.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import torch

from forget_sets.kinds import ForgetSpec
from trainer.device import device_from_args, resolve_precision
from trainer.fit import Recipe
from trainer.optim import SamConfig
from unlearn import METHODS, RUM, method_names
from unlearn.base import UnlearnConfig
from unlearn.release import release_config
from utils import paths
from utils.errors import UserError


def sam_config(args: argparse.Namespace) -> SamConfig | None:
    """``--sam min|max --rho --lamb --adaptive``; None without ``--sam``."""
    if args.sam is None:
        return None
    return SamConfig(sign=args.sam, rho=float(args.rho), lamb=float(args.lamb), adaptive=bool(args.adaptive))


def device(args: argparse.Namespace, local_rank: int | None = None) -> torch.device:
    """``--device`` / ``--gpu`` (``local_rank`` under torchrun)."""
    return device_from_args(args.device, args.gpu, local_rank)


def precision(args: argparse.Namespace) -> str:
    """``--precision`` resolved on ``--device``: fp32 or bf16 (DESIGN.md §5)."""
    return resolve_precision(getattr(args, "precision", "auto"), device(args))


def pretrain_recipe(args: argparse.Namespace) -> Recipe:
    """The pretraining recipe of main_train.py."""
    return Recipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, momentum=args.momentum,
                  weight_decay=args.weight_decay, warmup=args.warmup, augment=not args.no_aug, sam=sam_config(args),
                  precision=precision(args))


def _parser_default(dest: str):
    from arg_parser import build_parser

    return build_parser().get_default(dest)


def pretrain_identity(args: argparse.Namespace, *, sam: bool = True, lookup: bool = False) -> dict:
    """Every setting that changes a pretrained model (DESIGN.md §6), resolved (``--train_seed``
    defaults to ``--seed``; ``--precision`` on ``--device``). ``sam=False``: the SGD run's.
    ``lookup``: the pretrained run a later stage looks for without ``--mask``: its own dataset,
    architecture, epochs, lr, batch size, seeds, split and precision, and the defaults for the
    flags it reads as unlearning settings (momentum, weight decay, warm-up, augmentation)."""
    s = sam_config(args) if sam else None
    ident = dict(dataset=args.dataset, arch=args.arch, imagenet_arch=bool(getattr(args, "imagenet_arch", False)),
                 optimizer=s.tag() if s is not None else "sgd", epochs=args.epochs, lr=args.lr,
                 batch_size=args.batch_size, seed=args.seed, momentum=args.momentum, weight_decay=args.weight_decay,
                 warmup=args.warmup, augment=not args.no_aug, train_seed=train_seed(args),
                 split_seed=args.split_seed, precision=precision(args))
    if lookup:
        ident.update(momentum=_parser_default("momentum"), weight_decay=_parser_default("weight_decay"),
                     warmup=_parser_default("warmup"), augment=True, train_seed=args.seed)
    return ident


def _pretrain_extras(ident: dict) -> dict:
    """The settings of ``ident`` outside the readable base name that differ from their defaults."""
    defaults = {"momentum": _parser_default("momentum"), "weight_decay": _parser_default("weight_decay"),
                "warmup": _parser_default("warmup"), "augment": True, "train_seed": ident["seed"],
                "split_seed": _parser_default("split_seed"), "precision": "fp32"}
    return {k: ident[k] for k in paths.PRETRAIN_EXTRA_FORMATS if ident[k] != defaults[k]}


def pretrain_name(args: argparse.Namespace, *, sam: bool = True, lookup: bool = False) -> str:
    """The pretrained run's directory name: the readable base (dataset, arch, optimizer, epochs,
    lr, batch size, seed) and one part per other setting that differs from its default
    (:func:`pretrain_identity`)."""
    ident = pretrain_identity(args, sam=sam, lookup=lookup)
    return paths.pretrain_name(ident["dataset"], ident["arch"], optimizer_tag=ident["optimizer"],
                               epochs=ident["epochs"], lr=ident["lr"], batch_size=ident["batch_size"],
                               seed=ident["seed"], imagenet_arch=ident["imagenet_arch"],
                               extras=_pretrain_extras(ident))


def pretrain_dir(args: argparse.Namespace) -> Path:
    """Where main_train.py writes: ``--save_dir`` or ``<ckpts>/original``, joined with the run name."""
    return paths.pretrained_root(args.ckpts, getattr(args, "save_dir", None)) / pretrain_name(args)


def default_pretrained(args: argparse.Namespace) -> Path:
    """Where a stage without ``--mask`` looks: the SGD-pretrained run of the same flags."""
    return paths.pretrained_root(args.ckpts) / pretrain_name(args, sam=False, lookup=True)


def resolve_start_model(args: argparse.Namespace) -> Path:
    """``--mask`` (run directory, ``model.pt`` or original checkpoint), else the default pretrained
    run's ``model.pt``; a missing file is a one-line error naming the command that creates it. A
    start model trained on another train/val split than ``--split_seed`` is refused."""
    extra = "".join(f" --{k} {getattr(args, k)}" for k in ("split_seed", "precision", "train_seed")
                    if getattr(args, k, None) not in (None, _parser_default(k)))
    hint = (f"python main_train.py --dataset {args.dataset} --arch {args.arch} --epochs {args.epochs} "
            f"--lr {args.lr:g} --batch_size {args.batch_size} --seed {args.seed}{extra}")
    model_file = paths.resolve_model_file(args.mask, default_pretrained(args), hint)
    check_split_seed(args, model_file)
    return model_file


def start_model_args(model_file: Path | None) -> dict | None:
    """The flags recorded in the ``config.json`` of the run that wrote ``model_file``; None for a
    checkpoint of the original code (or a run without a readable config)."""
    if model_file is None or Path(model_file).name != paths.MODEL_FILE:
        return None
    try:
        a = json.loads((Path(model_file).parent / "config.json").read_text()).get("args")
    except (OSError, ValueError, AttributeError):
        return None
    return a if isinstance(a, dict) else None


# The pretraining settings that are not its recipe: which seed drew the initialization and the batches.
NOT_RECIPE = ("seed", "train_seed")


def start_recipe(model_file: Path | None) -> dict:
    """The pretraining recipe of a start model, the key that pairs an unlearning run with its
    retrain reference (DESIGN.md §7.2): ``{"key": {...}, "label": "SGD" | "SAM-min rho1 ..."}``.
    The key is the pretrained run's identity less its seeds (so seeds pool in one row); a model
    this toolkit did not pretrain (a checkpoint of the original code, an unlearned model) is its
    own recipe, keyed by its name."""
    config = None
    if model_file is not None and Path(model_file).name == paths.MODEL_FILE:
        try:
            config = json.loads((Path(model_file).parent / "config.json").read_text())
        except (OSError, ValueError):
            config = None
    ident = config.get("identity") if isinstance(config, dict) and config.get("stage") == "pretrain" else None
    if not isinstance(ident, dict):
        name = paths.model_name_of(model_file) if model_file is not None else None
        return {"key": {"model": name}, "label": name or "unknown"}
    key = {k: v for k, v in ident.items() if k not in NOT_RECIPE}
    opt = str(ident.get("optimizer", "sgd"))
    label = "SGD" if opt == "sgd" else "SAM-" + opt[len("sam-"):].replace("_", " ") if opt.startswith("sam-") else opt
    extras = _pretrain_extras({**ident, "train_seed": ident.get("seed")})
    parts = paths.extra_parts(extras, paths.PRETRAIN_EXTRA_FORMATS)
    return {"key": key, "label": " ".join([label] + parts)}


def check_split_seed(args: argparse.Namespace, model_file: Path) -> None:
    """Refuse a start model whose run used another ``--split_seed`` (its validation examples would
    be in this run's training split, and the other way round)."""
    started = start_model_args(model_file)
    if started is not None and "split_seed" in started and started["split_seed"] != args.split_seed:
        raise UserError(f"--split_seed {args.split_seed}: the start model {model_file} was trained on the split of "
                        f"--split_seed {started['split_seed']}; pass --split_seed {started['split_seed']} or a model "
                        f"trained on split {args.split_seed}")


def forget_spec(args: argparse.Namespace, *, start_model: Path | None = None, **override) -> ForgetSpec:
    """The forget-set flags; ``start_model`` (else ``--mask`` / the default pretrained run, resolved
    when a kind needs it) is the model ES groups and learning-event proxies come from."""
    values = {f.name: getattr(args, f.name) for f in fields(ForgetSpec)
              if f.name not in ("ckpts", "class_to_replace", "start_model")}
    values.update(override)
    resolve = (lambda: start_model) if start_model is not None else (lambda: resolve_start_model(args))
    return ForgetSpec(ckpts=Path(args.ckpts), class_to_replace=tuple(args.class_to_replace or (-1,)),
                      start_model=resolve, **values)


def check_method(args: argparse.Namespace, allowed: tuple[str, ...] | None = None, *,
                 mask_in_process: bool = False) -> None:
    """Validate ``--unlearn`` and the flags that go with it against the method registry, and fill
    the method's unset hyperparameter flags with its registered defaults (SCRUB).
    ``mask_in_process``: the caller computes SalUn's saliency mask itself (RUM), so ``RL`` does not
    need ``--path``."""
    accepted = tuple(allowed or method_names())
    if args.unlearn is None and args.es and allowed is None:
        return  # --es runs no method (the original demanded some valid name; any is accepted here too)
    if args.unlearn is None:
        raise UserError(f"--unlearn is required; accepted: {', '.join(accepted)}")
    if args.unlearn == RUM:
        raise UserError("--unlearn RUM: the RUM meta-algorithm runs in its own scripts: python main_rum.py "
                        "(groups by memorization) or python main_rum_proxy.py (groups by a memorization proxy), "
                        "with the same forget-set flags")
    if allowed is not None and args.unlearn not in allowed:
        raise UserError(f"--unlearn {args.unlearn}: this script runs {', '.join(allowed)} only"
                        + ("; use main_forget.py for the other methods" if "RL" in allowed else ""))
    method = METHODS.get(args.unlearn)
    if method is None:
        raise UserError(f"--unlearn {args.unlearn!r}: unknown method; accepted: {', '.join(accepted)}")
    if args.separate and args.unlearn != "NG":
        raise UserError(f"--separate {' '.join(args.separate)}: Sharp MinMax applies to --unlearn NG only, "
                        f"not {args.unlearn}")
    if args.separate and not args.path:
        raise UserError(f"--separate {' '.join(args.separate)} needs --path MASK_FILE (the saliency mask that "
                        f"splits the weights into forget and retain parts; see generate_mask.py)")
    if method.saliency == "required" and not args.path and not mask_in_process:
        raise UserError(f"--unlearn {args.unlearn} ({method.label}) needs --path MASK_FILE, a saliency mask written "
                        f"by generate_mask.py; --unlearn RL_og is random labelling without a mask")
    if args.path and method.saliency == "never":
        raise UserError(f"--path {args.path}: a saliency mask does not apply to --unlearn {args.unlearn}")
    for k, v in method.defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, type(v)(v))
    if args.unlearn == "NG" and not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha {args.alpha}: NG's retain weight must be in [0, 1]")


def unlearn_config(args: argparse.Namespace, mask: dict | None = None) -> UnlearnConfig:
    """The unlearning flags; for retrain the pretraining recipe with ``--unlearn_epochs`` epochs at
    ``--unlearn_lr`` (the original README: set those two as you pretrain)."""
    sam = sam_config(args)
    recipe = None
    if args.unlearn == "retrain":
        recipe = Recipe(epochs=args.unlearn_epochs, lr=args.unlearn_lr, batch_size=args.batch_size,
                        momentum=args.momentum, weight_decay=args.weight_decay, warmup=args.warmup,
                        augment=not args.no_aug, sam=sam, precision=precision(args))
    cfg = UnlearnConfig(
        lr=args.unlearn_lr, epochs=args.unlearn_epochs, batch_size=args.batch_size, optimizer=args.unlearn_optimizer,
        momentum=args.momentum, weight_decay=args.weight_decay, milestones=tuple(args.decreasing_lr),
        augment=not args.no_aug, sam=sam, separate=tuple(args.separate) if args.separate else None, mask=mask,
        alpha=args.alpha, beta=args.beta, gamma=args.gamma, msteps=args.msteps, kd_T=args.kd_T,
        no_l1_epochs=args.no_l1_epochs, recipe=recipe, precision=precision(args), release=bool(args.release))
    return release_config(cfg) if cfg.release else cfg


def train_seed(args: argparse.Namespace) -> int:
    """``--train_seed``, defaulting to ``--seed``: the seed of a fresh model's initialization."""
    return args.train_seed if args.train_seed is not None else args.seed
