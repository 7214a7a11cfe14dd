"""Loading checkpoints written by the original code (upstream-spec §3.4, §5.12).

The original saves ``{"state_dict": ..., "best_sa": ..., "optimizer": ..., ...}``; a model wrapped
in ``nn.DataParallel`` saves keys with a leading ``module.``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from utils.errors import UserError

_PREFIX = "module."


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
