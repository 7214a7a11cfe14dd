"""Run directories (DESIGN.md §6): config.json, model.pt, metrics.json, outputs.npz, log.jsonl.

A run directory is complete when ``metrics.json`` exists; a complete result is never overwritten
without ``--overwrite``. Every file is written atomically.
"""
from __future__ import annotations

import datetime as _dt
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from utils.errors import UserError
from utils.io import atomic_save_npz, atomic_torch_save, atomic_write_json, remove_stale_tmp

REPO = Path(__file__).resolve().parent.parent


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_config(args: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """All arguments (the flags as a mapping), library versions, git commit, command line and time."""
    a = dict(args)
    import numpy
    import sklearn

    return {
        "args": a,
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": numpy.__version__, "sklearn": sklearn.__version__},
        "git_commit": git_commit(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def is_complete(run_dir: Path) -> bool:
    return (Path(run_dir) / "metrics.json").is_file()


def _staging(run_dir: Path) -> Path:
    """Where ``--overwrite`` builds the replacement of a finished run, beside it."""
    return run_dir.parent / f".{run_dir.name}.overwrite"


def _previous(run_dir: Path) -> Path:
    """Where a finished run waits while its replacement is moved into place."""
    return run_dir.parent / f".{run_dir.name}.previous"


def restore_interrupted(run_dir: Path) -> None:
    """Undo a replacement a kill interrupted between its two renames: the finished run moved aside
    goes back into place (the replacement, not yet in place, is discarded)."""
    run_dir = Path(run_dir)
    previous = _previous(run_dir)
    if previous.is_dir() and not run_dir.exists():
        previous.rename(run_dir)
    if previous.is_dir() and is_complete(run_dir):
        shutil.rmtree(previous)


def prepare_run_dir(run_dir: Path, *, overwrite: bool, resume: bool = False) -> Path:
    """The directory to write the run into. A finished run is refused unless ``overwrite``; then
    the new run is built in a staging directory beside it and replaces it only when complete
    (:func:`commit_run_dir`), so a kill at any point keeps the old result. An unfinished run is
    cleared with ``overwrite``. Temporary files left by a killed atomic write are deleted."""
    run_dir = Path(run_dir)
    restore_interrupted(run_dir)
    target = run_dir
    if is_complete(run_dir):
        if not overwrite:
            raise UserError(f"{run_dir} already holds a finished run; pass --overwrite to replace it")
        target = _staging(run_dir)
        if target.exists():
            shutil.rmtree(target)
    elif run_dir.exists() and not resume and any(run_dir.iterdir()):
        if not overwrite and (run_dir / "checkpoint.pt").exists():
            raise UserError(f"{run_dir} holds an unfinished run; pass --resume to continue it or --overwrite to restart")
        if overwrite:
            shutil.rmtree(run_dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
        remove_stale_tmp(target)
    except OSError as e:
        raise UserError(f"--save_dir: cannot write to {target}: {e.strerror or e}") from None
    return target


def commit_run_dir(written: Path, run_dir: Path) -> Path:
    """Put a run written by :func:`prepare_run_dir` in place: a no-op unless it was staged beside a
    finished run, which it then replaces (moved aside, the new one renamed in, the old deleted).
    Returns ``run_dir``."""
    written, run_dir = Path(written), Path(run_dir)
    if written != run_dir:
        previous = _previous(run_dir)
        if previous.exists():
            shutil.rmtree(previous)
        run_dir.rename(previous)
        written.rename(run_dir)
        shutil.rmtree(previous)
    return run_dir


def check_writable(path: Path, flag: str = "--save_dir") -> None:
    """Refuse early when ``path`` (a directory to be created) cannot be written."""
    p = Path(path)
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise UserError(f"{flag} {path}: {p} is a file, not a directory")
    import os

    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {p} is not writable")


def save_model(run_dir: Path, model: nn.Module, **meta: Any) -> Path:
    path = Path(run_dir) / "model.pt"
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(path, {"state_dict": state, **meta})
    return path


def write_outputs(run_dir: Path, splits: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """``splits[name] = (global ids, logits, labels)`` -> outputs.npz keys name_ids/_logits/_labels."""
    arrays = {}
    for name, (ids, logits, labels) in splits.items():
        arrays[f"{name}_ids"] = np.asarray(ids, np.int64)
        arrays[f"{name}_logits"] = np.asarray(logits, np.float32)
        arrays[f"{name}_labels"] = np.asarray(labels, np.int64)
    atomic_save_npz(Path(run_dir) / "outputs.npz", **arrays)


def write_metrics(run_dir: Path, metrics: Mapping[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / "metrics.json", dict(metrics))


def write_config(run_dir: Path, config: Mapping[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / "config.json", dict(config))
