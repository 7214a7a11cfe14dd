"""The ``ckpts/`` artifact tree (DESIGN.md §6): every path under it is built here, from plain values.

    <ckpts>/original/<pretrained run>/            main_train.py (or --save_dir/<run>)
    <ckpts>/memorization/<dataset>_memorization.npz   main_memorization.py (+ shards, proxies)
    <ckpts>/forget_sets/<forget set>.npz
    <ckpts>/unlearn/<forget set>/<model>/<method tag>/seed<seed>/
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping

from utils.errors import UserError

REPO = Path(__file__).resolve().parent.parent
MODEL_FILE = "model.pt"


def safe_name(text: str) -> str:
    """``text`` with every run of characters outside ``[A-Za-z0-9._-]`` replaced by ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


# Name parts of the pretraining settings outside the readable base, when they differ from the defaults.
PRETRAIN_EXTRA_FORMATS = {"momentum": "mom{:g}", "weight_decay": "wd{:g}", "warmup": "warm{}", "augment": "noaug",
                          "train_seed": "init{}", "split_seed": "split{}", "precision": "{}"}


def pretrain_name(dataset: str, arch: str, *, optimizer_tag: str, epochs: int, lr: float, batch_size: int,
                  seed: int, imagenet_arch: bool = False, extras: Mapping[str, Any] | None = None) -> str:
    """e.g. ``cifar10_resnet18_sgd_ep50_lr0.1_bs256_seed2``,
    ``cifar10_resnet18_sam-min_rho1_lamb1_adaptive_ep50_lr0.1_bs256_seed2`` (``optimizer_tag`` is
    ``sgd`` or :meth:`trainer.optim.SamConfig.tag`) or ``..._seed2_wd0.001_split3_bf16`` with
    ``extras``, the other settings where they differ from the defaults (:func:`extra_parts`)."""
    stem = "_imagenetstem" if imagenet_arch else ""
    base = f"{dataset}_{arch}{stem}_{optimizer_tag}_ep{epochs}_lr{lr:g}_bs{batch_size}_seed{seed}"
    return "_".join([base] + extra_parts(extras or {}, PRETRAIN_EXTRA_FORMATS))


def short_hash(record: Mapping[str, Any]) -> str:
    """Eight hex digits of the sha256 of ``record`` as canonical JSON (sorted keys)."""
    text = json.dumps(dict(record), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def extra_parts(extras: Mapping[str, Any], formats: Mapping[str, str]) -> list[str]:
    """Name parts of the settings that differ from their defaults (``extras``: only those): one
    readable part per setting with a format in ``formats`` (``"wd{:g}"``; a format without ``{}``
    is a flag word such as ``noaug``), then ``h<short hash>`` of the settings without one, so every
    setting that changes a result changes the name (DESIGN.md §6)."""
    parts, rest = [], {}
    for key, value in extras.items():
        if key in formats:
            parts.append(formats[key].format(value))
        else:
            rest[key] = value
    if rest:
        parts.append("h" + short_hash(rest))
    return parts


def pretrained_root(ckpts: str | Path, save_dir: str | Path | None = None) -> Path:
    """``--save_dir`` when given (main_train.py), else ``<ckpts>/original``."""
    return Path(save_dir) if save_dir else Path(ckpts) / "original"


def model_name_of(model_file: str | Path) -> str:
    """A run directory's name, or a checkpoint file's stem (``x.pth.tar`` -> ``x``)."""
    p = Path(model_file)
    if p.name == MODEL_FILE:
        return safe_name(p.parent.name)
    name = p.name
    for suffix in (".pth.tar", ".pt", ".pth", ".tar", ".ckpt"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return safe_name(name)


def resolve_model_file(mask: str | None, default_dir: Path, create_hint: str) -> Path:
    """``--mask`` as a run directory, its ``model.pt`` or a checkpoint file; without it
    ``default_dir/model.pt``. A missing file is a :class:`UserError` naming the path looked for and
    (``create_hint``) the command that creates it."""
    if mask is None:
        if (default_dir / MODEL_FILE).is_file():
            return default_dir / MODEL_FILE
        raise UserError(f"no pretrained model at {default_dir / MODEL_FILE} (from --dataset/--arch/--epochs/--lr/"
                        f"--batch_size/--seed); create it with: {create_hint}, or pass --mask PATH")
    p = Path(mask)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.is_file():
        raise UserError(f"--mask {mask}: no such model file ({p})")
    return p


def forget_sets_dir(ckpts: str | Path) -> Path:
    return Path(ckpts) / "forget_sets"


def forget_set_path(ckpts: str | Path, name: str) -> Path:
    return forget_sets_dir(ckpts) / f"{name}.npz"


def unlearn_root(ckpts: str | Path) -> Path:
    """The tree of unlearning runs: ``<ckpts>/unlearn/<forget set>/<model>/<method tag>/seed<k>``."""
    return Path(ckpts) / "unlearn"


def unlearn_run_dir(ckpts: str | Path, forget_set: str, model_name: str, method_tag: str, seed: int) -> Path:
    return unlearn_root(ckpts) / forget_set / model_name / method_tag / f"seed{seed}"


def analysis_dir(ckpts: str | Path) -> Path:
    """Where analysis.py, analysis_mia.py, analysis_audit.py and entanglement write their tables."""
    return Path(ckpts) / "analysis"


def memorization_dir(ckpts: str | Path) -> Path:
    return Path(ckpts) / "memorization"


def audit_dir(ckpts: str | Path) -> Path:
    """Where analysis_audit.py stores its shadow models (one file per recipe and pool, reused)."""
    return Path(ckpts) / "audit"


def computed_proxy_path(ckpts: str | Path, dataset: str, arch: str) -> Path:
    """Where main_memorization.py writes the ho_ret / curvature proxies."""
    return memorization_dir(ckpts) / f"{dataset}_{arch}_proxies.npz"


def learning_event_proxy_path(model_file: str | Path) -> Path:
    """The learning-event proxies main_train.py writes beside the model it trains."""
    return Path(model_file).parent / "proxies.npz"


def score_search_dirs(ckpts: str | Path) -> list[Path]:
    """Where a published or computed memorization score file is looked for, in order."""
    return [Path.cwd(), REPO, memorization_dir(ckpts)]
