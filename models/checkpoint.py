"""Loading a model checkpoint into a built model: ours (``model.pt``) or the original code's.

The file is read once with ``torch.load(weights_only=True)``; a checkpoint of another
architecture or class count, or one that does not fit, is a one-line :class:`UserError`.

A checkpoint of the original code for ImageNet or Tiny-ImageNet loads as a model that normalizes
its inputs twice, as the original's pipeline did (models/compat.py, models/normalize.py), and says
so in one line; the state dict then records it, so a model saved from it reloads the same way.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.errors import UserError
from utils.io import load_torch_file

from .compat import PASSES_KEY, extract_state_dict, original_imagenet_type
from .normalize import NormalizeByChannelMeanStd, passes_of

# Original key -> key here: the original ResNet-20s/44s/56s head ``linear`` is ``fc`` here.
_RENAMED = {"linear.weight": "fc.weight", "linear.bias": "fc.bias"}


def read_checkpoint(path: Path, flag: str = "--mask") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state dict, metadata)`` of a checkpoint file; metadata holds ``arch``, ``num_classes``,
    ``dataset`` where the file records them, and ``original_imagenet_type`` (the dataset) for a
    checkpoint of the original code whose inputs were normalized twice: its state dict then
    holds ``normalize.passes = 2``, so that loading it reproduces the original's pipeline."""
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
    original = original_imagenet_type(obj, state)
    if original is not None:
        state[PASSES_KEY] = torch.tensor(2, dtype=torch.int64)
        meta["original_imagenet_type"] = original
    return state, meta


def _set_passes(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> int:
    """Give every ``normalize`` module of ``model`` the passes ``state`` records for it (before the
    key check, so that ``normalize.passes`` is expected); returns the most passes."""
    most = 1
    for name, module in model.named_modules():
        key = f"{name}.passes" if name else "passes"
        if isinstance(module, NormalizeByChannelMeanStd) and key in state:
            try:
                module.set_passes(passes_of(state[key]))
            except ValueError as e:
                raise UserError(f"{where}: {key}: {e}") from None
            most = max(most, module.n_passes)
    return most


def load_state(path: Path, flag: str = "--mask") -> dict[str, torch.Tensor]:
    return read_checkpoint(path, flag)[0]


def load_into(model: nn.Module, path: Path, *, arch: str, num_classes: int, flag: str = "--mask") -> None:
    """Load a checkpoint into ``model``; a different architecture or class count is a
    :class:`UserError` that says which."""
    state, meta = read_checkpoint(path, flag)
    if "arch" in meta and meta["arch"] != arch:
        raise UserError(f"{flag} {path}: checkpoint is a {meta['arch']}, but --arch is {arch}")
    passes = _set_passes(model, state, f"{flag} {path}")
    own = model.state_dict()
    for old, new in _RENAMED.items():  # as the model's own load hook does (models/resnet_s.py)
        if old in state and old not in own and new in own and new not in state:
            state[new] = state.pop(old)
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
    if "original_imagenet_type" in meta:
        print(f"{path}: a checkpoint of the original code for {meta['original_imagenet_type']}; its inputs were "
              f"normalized twice (dataset transform and model), reproduced here")
    elif passes > 1:
        print(f"{path}: normalizes its inputs {'twice' if passes == 2 else f'{passes} times'}, as recorded in "
              f"the checkpoint (it started from a checkpoint of the original code), kept")
