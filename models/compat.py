"""Loading checkpoints written by the original code (upstream-spec §3.4, §5.12).

The original saves ``{"state_dict": ..., "best_sa": ..., "optimizer": ..., ...}``; a model wrapped
in ``nn.DataParallel`` saves keys with a leading ``module.``.

For ImageNet and Tiny-ImageNet the original's data transform already applied ``Normalize`` with
the ImageNet stats and the model's ``normalize`` sub-module normalized again (upstream-spec §4.2),
so a checkpoint of the original code whose ``normalize`` buffers hold the ImageNet stats is loaded
with two normalization passes (:data:`PASSES_KEY`). Our own ``model.pt`` files are told apart by
the metadata ``utils.rundir.save_model`` writes beside the state dict (``arch``, ``dataset``,
``num_classes``), which the original never writes; they load as their state dict says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from utils.data import NORMALIZATION
from utils.errors import UserError

_PREFIX = "module."
# The state-dict entry that records a doubly normalizing model (models/normalize.py).
PASSES_KEY = "normalize.passes"
# Class count -> dataset name here, for the original's ImageNet-normalized datasets.
_IMAGENET_TYPE = {200: "tinyimagenet", 1000: "imagenet"}
_OURS = ("arch", "dataset", "num_classes")


def extract_state_dict(obj: Any) -> dict[str, Tensor]:
    """Return the model state dict held by ``obj``.

    Accepts a raw state dict or a checkpoint dict with key ``"state_dict"``; strips a leading
    ``module.`` from every key that has one. Raises :class:`UserError` for anything else (the
    caller should add the file name to the message).
    """
    if not isinstance(obj, Mapping):
        raise UserError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise UserError(f"checkpoint is not a state dict (key {key!r} is not a string)")
        if not isinstance(value, Tensor):
            raise UserError(f"checkpoint is not a state dict: entry {key!r} is a "
                            f"{type(value).__name__}, not a tensor (keys: {sorted(map(str, obj))[:8]})")
        out[key[len(_PREFIX):] if key.startswith(_PREFIX) else key] = value
    return out


def is_ours(obj: Any) -> bool:
    """Whether ``obj`` (a loaded checkpoint file) is a ``model.pt`` written here: a dict with the
    metadata ``save_model`` records next to ``state_dict``."""
    return isinstance(obj, Mapping) and "state_dict" in obj and any(k in obj for k in _OURS)


def _close(value: Tensor, ref: tuple[float, ...]) -> bool:
    ref_t = torch.tensor(ref, dtype=torch.float32)
    return value.shape == ref_t.shape and bool(torch.allclose(value.float(), ref_t, rtol=0.0, atol=1e-4))


def _classes(state: Mapping[str, Tensor]) -> int | None:
    heads = [v for k, v in state.items() if k.endswith(("fc.weight", "linear.weight", "head.weight"))]
    return int(heads[-1].shape[0]) if heads else None


def original_imagenet_type(obj: Any, state: Mapping[str, Tensor]) -> str | None:
    """For a checkpoint of the original code trained on an ImageNet-type dataset (its inputs were
    normalized twice), the dataset: ``tinyimagenet`` (200 classes), ``imagenet`` (1000), else a
    description; ``None`` for any other checkpoint (ours, CIFAR, SVHN, no ``normalize`` buffers).

    The original sets the ``normalize`` buffers from the dataset, and only its ImageNet-type
    datasets (all of them double-normalized) use the ImageNet stats.
    """
    if is_ours(obj) or PASSES_KEY in state:
        return None
    mean, std = state.get("normalize.mean"), state.get("normalize.std")
    imean, istd = NORMALIZATION["imagenet"]
    if mean is None or std is None or not (_close(mean, imean) and _close(std, istd)):
        return None
    classes = _classes(state)
    if classes is None:
        return "an ImageNet-normalized dataset"
    return _IMAGENET_TYPE.get(classes, f"an ImageNet-normalized dataset ({classes} classes)")
