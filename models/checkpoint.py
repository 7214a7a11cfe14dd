"""Loading a model checkpoint into a built model: ours (``model.pt``) or the original code's.

The file is read once with ``torch.load(weights_only=True)``; a checkpoint of another
architecture or class count, or one that does not fit, is a one-line :class:`UserError`.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.errors import UserError
from utils.io import load_torch_file

from .compat import extract_state_dict


def read_checkpoint(path: Path, flag: str = "--mask") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state dict, metadata)`` of a checkpoint file; metadata holds ``arch``, ``num_classes``,
    ``dataset`` where the file records them."""
    try:
        obj = load_torch_file(path)
        state = extract_state_dict(obj)
    except Exception as e:  # unreadable, not a torch file, unsafe pickle
        if isinstance(e, pickle.UnpicklingError):  # torch cannot tell damage from unsafe content apart
            raise UserError(f"{flag} {path}: cannot read the checkpoint: not a file of tensors only (damaged, or "
                            f"holding other Python objects, which are never loaded)") from None
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise UserError(f"{flag} {path}: cannot read the checkpoint ({type(e).__name__}: {first})") from None
    meta = {k: obj[k] for k in ("arch", "num_classes", "dataset") if isinstance(obj, dict) and k in obj}
    return state, meta


def load_state(path: Path, flag: str = "--mask") -> dict[str, torch.Tensor]:
    return read_checkpoint(path, flag)[0]


def load_into(model: nn.Module, path: Path, *, arch: str, num_classes: int, flag: str = "--mask") -> None:
    """Load a checkpoint into ``model``; a different architecture or class count is a
    :class:`UserError` that says which."""
    state, meta = read_checkpoint(path, flag)
    if "arch" in meta and meta["arch"] != arch:
        raise UserError(f"{flag} {path}: checkpoint is a {meta['arch']}, but --arch is {arch}")
    own = model.state_dict()
    for k in (k for k in own if k.endswith(("fc.weight", "heads.head.weight", "head.weight"))):
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
