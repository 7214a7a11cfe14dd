"""Flags -> typed configs: the one place an argparse Namespace becomes plain values.

Every library function below ``stages/`` takes what these return (``SamConfig``, ``Recipe``,
``UnlearnConfig``, ``ForgetSpec``, paths), never the Namespace.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from trainer.device import device_from_args
from trainer.fit import Recipe
from trainer.optim import SamConfig
from utils import paths


def sam_config(args: argparse.Namespace) -> SamConfig | None:
    """``--sam min|max --rho --lamb --adaptive``; None without ``--sam``."""
    if args.sam is None:
        return None
    return SamConfig(sign=args.sam, rho=float(args.rho), lamb=float(args.lamb), adaptive=bool(args.adaptive))


def device(args: argparse.Namespace, local_rank: int | None = None) -> torch.device:
    """``--device`` / ``--gpu`` (``local_rank`` under torchrun)."""
    return device_from_args(args.device, args.gpu, local_rank)


def pretrain_recipe(args: argparse.Namespace) -> Recipe:
    """The pretraining recipe of main_train.py."""
    return Recipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, momentum=args.momentum,
                  weight_decay=args.weight_decay, warmup=args.warmup, augment=not args.no_aug, sam=sam_config(args))


def pretrain_name(args: argparse.Namespace, *, sam: bool = True) -> str:
    """The pretrained run's directory name from its flags (``sam=False``: the SGD run's)."""
    s = sam_config(args) if sam else None
    return paths.pretrain_name(args.dataset, args.arch, optimizer_tag=s.tag() if s is not None else "sgd",
                               epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                               imagenet_arch=bool(getattr(args, "imagenet_arch", False)))


def pretrain_dir(args: argparse.Namespace) -> Path:
    """Where main_train.py writes: ``--save_dir`` or ``<ckpts>/original``, joined with the run name."""
    return paths.pretrained_root(args.ckpts, getattr(args, "save_dir", None)) / pretrain_name(args)


def default_pretrained(args: argparse.Namespace) -> Path:
    """Where a stage without ``--mask`` looks: the SGD-pretrained run of the same flags."""
    return paths.pretrained_root(args.ckpts) / pretrain_name(args, sam=False)


def resolve_start_model(args: argparse.Namespace) -> Path:
    """``--mask`` (run directory, ``model.pt`` or original checkpoint), else the default pretrained
    run's ``model.pt``; a missing file is a one-line error naming the command that creates it."""
    hint = (f"python main_train.py --dataset {args.dataset} --arch {args.arch} --epochs {args.epochs} "
            f"--lr {args.lr:g} --batch_size {args.batch_size} --seed {args.seed}")
    return paths.resolve_model_file(args.mask, default_pretrained(args), hint)
