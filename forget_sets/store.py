"""Forget-set files: load one if it holds the same selection, else build and save it.

``<ckpts>/forget_sets/<name>.npz`` (DESIGN.md §6). A file that already exists is reused when its
manifest selects the same examples (the keys in :data:`IDENTITY_KEYS`, among them the sha256 of the
score, proxy or model file the selection came from); a file whose manifest differs is refused
(runs that used it reference its sha256) unless ``--overwrite`` rebuilds it. Where the file lives
never matters, only what is in it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from forget_sets.file import ForgetSet, check_fits, load_forget_set, save_forget_set
from forget_sets.kinds import ForgetPlan, ForgetSpec, build, eval_extras, plan_forget_set
from utils.data import ImageData
from utils.errors import UserError

# The manifest keys that decide which examples are selected (compared on reuse).
IDENTITY_KEYS = ("dataset", "split_seed", "num_train", "kind", "n", "level", "proxy", "group", "classes",
                 "seed", "shuffle", "score_sha256", "proxy_sha256", "model_sha256", "n_groups")


def _identity(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: manifest.get(k) for k in IDENTITY_KEYS}


def check_can_save(plan: ForgetPlan) -> None:
    """Refuse, before any work, a plan whose file would have to be written where it cannot be.

    A given ``--forget_set`` file and a file that already exists are read, not written, so they
    pass (rebuilding a differing file under ``--overwrite`` is caught when it is saved). Otherwise
    the nearest existing ancestor of the file's directory must be a directory this process can
    write to; else a one-line :class:`UserError` names the file, the blocking path and ``--ckpts``.
    """
    if plan.given_file:
        return
    target = Path(plan.path)
    if target.is_file():
        return
    if target.exists():
        raise UserError(f"--ckpts: cannot write forget set file {target}: it exists and is not a file")
    p = target.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise UserError(f"--ckpts: cannot write forget set file {target}: {p} is a file, not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"--ckpts: cannot write forget set file {target}: {p} is not writable")


def _save(plan: ForgetPlan, fs: ForgetSet) -> None:
    """``save_forget_set`` with an unwritable destination as a one-line :class:`UserError`."""
    try:
        save_forget_set(plan.path, fs)
    except OSError as e:
        raise UserError(f"--ckpts: cannot write forget set file {plan.path}: {e.strerror or e}") from None


def load_or_build(plan: ForgetPlan, spec: ForgetSpec, data: ImageData, *, device: torch.device | str = "cpu",
           log: Callable[[str], None] = print) -> ForgetSet:
    """Load ``plan.path`` if it holds the same selection, else build and save it."""
    if plan.given_file:
        fs = plan.given if plan.given is not None else load_forget_set(plan.path)
        check_fits(fs, data, f"--forget_set {plan.path}")
        if not any(k in fs.extras for k in ("high_mem", "mid_mem", "low_mem")):
            extras, _ = eval_extras(spec, data, len(fs.forget_ids))
            fs.extras.update(extras)  # in memory only: the given file is not ours to rewrite
        log(plan.note + f": {len(fs.forget_ids)} forget, {len(fs.retain_ids)} retain")
        return fs
    if plan.path.is_file():
        fs = load_forget_set(plan.path)
        old, new = _identity(fs.manifest), _identity(plan.manifest)
        if old == new:
            check_fits(fs, data, f"forget set file {plan.path}")
            log(plan.note + f": reusing {plan.path} ({len(fs.forget_ids)} forget, {len(fs.retain_ids)} retain)")
            return fs
        diff = [k for k in IDENTITY_KEYS if old.get(k) != new.get(k)]
        if not spec.overwrite:
            raise UserError(f"forget set file {plan.path} exists but selects differently ({', '.join(diff)} differ: "
                            f"{', '.join(f'{k} {old.get(k)!r} vs {new.get(k)!r}' for k in diff[:2])}); runs that used it "
                            f"reference its sha256. Pass --overwrite to rebuild it, or move it away")
        log(f"forget set file {plan.path}: manifest differs ({', '.join(diff)}); rebuilding (--overwrite)")
    fs = build(plan, spec, data, device=device)
    check_fits(fs, data, f"forget set {plan.name}")
    _save(plan, fs)
    log(plan.note + f": built {plan.path} ({len(fs.forget_ids)} forget, {len(fs.retain_ids)} retain"
        + (f"; eval subsets from {fs.manifest.get('eval_score_file')}" if fs.extras else "") + ")")
    return fs


def build_forget_set(spec: ForgetSpec, data: ImageData, *, device: torch.device | str = "cpu",
                     log: Callable[[str], None] = print) -> tuple[ForgetSet, Path]:
    """Plan, then load or build and save: ``(forget set, its file)``."""
    plan = plan_forget_set(spec, data)
    check_can_save(plan)
    return load_or_build(plan, spec, data, device=device, log=log), plan.path


def forget_ids_sha256(fs: ForgetSet) -> str:
    """Content identity of a forget set: sha256 of its sorted forget ids (int64, little endian)."""
    return hashlib.sha256(np.sort(np.asarray(fs.forget_ids, "<i8")).tobytes()).hexdigest()


