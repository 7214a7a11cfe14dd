"""Where the pretrained model lives, and loading a model checkpoint (DESIGN.md §6).

The pretrained model's directory is named from the arguments that define it, so later stages that
pass no ``--mask`` find it from the same arguments.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from trainer.optim import SamConfig
from utils.errors import UserError


def sam_config(args: argparse.Namespace) -> SamConfig | None:
    if args.sam is None:
        return None
    return SamConfig(sign=args.sam, rho=float(args.rho), lamb=float(args.lamb), adaptive=bool(args.adaptive))


def pretrain_name(args: argparse.Namespace) -> str:
    """e.g. ``cifar10_resnet18_sgd_ep50_lr0.1_bs256_seed2`` or
    ``cifar10_resnet18_sam-min_rho1_lamb1_adaptive_ep50_lr0.1_bs256_seed2``."""
    sam = sam_config(args)
    opt = sam.tag() if sam is not None else "sgd"
    stem = "_imagenetstem" if getattr(args, "imagenet_arch", False) else ""
    return (f"{args.dataset}_{args.arch}{stem}_{opt}_ep{args.epochs}_lr{args.lr:g}_bs{args.batch_size}"
            f"_seed{args.seed}")


def pretrain_dir(args: argparse.Namespace) -> Path:
    """``--save_dir`` (main_train) or ``<ckpts>/original`` joined with :func:`pretrain_name`."""
    root = Path(args.save_dir) if getattr(args, "save_dir", None) else Path(args.ckpts) / "original"
    return root / pretrain_name(args)


def default_pretrained(args: argparse.Namespace) -> Path:
    """Where a stage without ``--mask`` looks: the SGD-pretrained model of the same arguments."""
    ns = argparse.Namespace(**{**vars(args), "sam": None, "save_dir": None})
    return Path(args.ckpts) / "original" / pretrain_name(ns)


def resolve_model_file(mask: str | None, args: argparse.Namespace) -> Path:
    """``--mask`` as a run directory, its ``model.pt``, or an original checkpoint file; without it
    the default pretrained run. A missing file is a :class:`UserError` naming the path looked for
    and the command that creates it."""
    if mask is None:
        d = default_pretrained(args)
        if (d / "model.pt").is_file():
            return d / "model.pt"
        raise UserError(
            f"no pretrained model at {d / 'model.pt'} (from --dataset/--arch/--epochs/--lr/--batch_size/--seed); "
            f"create it with: python main_train.py --dataset {args.dataset} --arch {args.arch} --epochs {args.epochs} "
            f"--lr {args.lr:g} --batch_size {args.batch_size} --seed {args.seed}, or pass --mask PATH")
    p = Path(mask)
    if p.is_dir():
        p = p / "model.pt"
    if not p.is_file():
        raise UserError(f"--mask {mask}: no such model file ({p})")
    return p


def load_state(path: Path, flag: str = "--mask") -> dict[str, torch.Tensor]:
    from models import extract_state_dict

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        return extract_state_dict(obj)
    except Exception as e:  # unreadable, not a torch file, unsafe pickle
        raise UserError(f"{flag} {path}: cannot read the checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def load_into(model: nn.Module, path: Path, *, arch: str, num_classes: int, flag: str = "--mask") -> None:
    """Load a checkpoint into ``model``; a different architecture or class count is a
    :class:`UserError` that says which."""
    state = load_state(path, flag)
    meta = {}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            meta = {k: obj[k] for k in ("arch", "num_classes", "dataset") if k in obj}
    except Exception:
        pass
    if "arch" in meta and meta["arch"] != arch:
        raise UserError(f"{flag} {path}: checkpoint is a {meta['arch']}, but --arch is {arch}")
    own = model.state_dict()
    fc = [k for k in own if k.endswith(("fc.weight", "heads.head.weight", "head.weight"))]
    for k in fc:
        if k in state and state[k].shape[0] != own[k].shape[0]:
            raise UserError(f"{flag} {path}: checkpoint has {state[k].shape[0]} classes, "
                            f"--dataset needs {own[k].shape[0]}")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        what = (f"missing {missing[:3]}" if missing else "") + (f" unexpected {unexpected[:3]}" if unexpected else "") \
            + (f" shape mismatch {shape[:3]}" if shape else "")
        raise UserError(f"{flag} {path}: checkpoint does not fit --arch {arch} with {num_classes} classes ({what.strip()})")
    model.load_state_dict(state)
