"""Per-channel normalization applied inside every model (upstream-spec §4.2, DESIGN.md §4).

The original code defines ``NormalizeByChannelMeanStd`` as the first sub-module of every model and
registers ``mean``/``std`` as buffers, so they appear in the state dict as ``normalize.mean`` and
``normalize.std``. Inputs are float tensors in [0, 1] of shape [B, C, H, W].

For its ImageNet-type datasets the original's data transform already applied ``Normalize`` with
the same ImageNet stats, so its models saw inputs normalized twice (upstream-spec §4.2). A model
loaded from such a checkpoint reproduces that with ``passes = 2``: the normalization is applied
twice, and an extra buffer ``normalize.passes`` (int64, present only when ``passes > 1``) records
it in the state dict, so that a model saved here after starting from such a checkpoint reloads
faithfully; a state dict without it (every model trained here) keeps one pass.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class NormalizeByChannelMeanStd(nn.Module):
    """``x -> (x - mean[c]) / std[c]`` with ``mean``/``std`` stored as buffers of shape [C]."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, passes: int = 1) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten().clone()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten().clone()
        if mean_t.numel() != std_t.numel():
            raise ValueError(f"mean has {mean_t.numel()} channels but std has {std_t.numel()}")
        if bool((std_t == 0).any()):
            raise ValueError("std must be non-zero in every channel")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        self.n_passes = 1
        self.set_passes(passes)

    def set_passes(self, passes: int) -> None:
        """Apply the normalization ``passes`` times (2: the original's ImageNet-type pipelines);
        more than one pass is recorded in the buffer ``passes``, one pass leaves no buffer."""
        self.n_passes = passes_of(passes)
        if self.n_passes == 1:
            self._buffers.pop("passes", None)
        else:
            self.register_buffer("passes", torch.tensor(self.n_passes, dtype=torch.int64, device=self.mean.device))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """A state dict holding ``passes`` sets the number of passes before loading; one without it
        leaves the module as it is (a strict load into a two-pass module then reports it missing)."""
        key = prefix + "passes"
        if key in state_dict:
            try:
                self.set_passes(passes_of(state_dict[key]))
            except ValueError as e:
                error_msgs.append(f"{key}: {e}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        """Normalize a [B, C, H, W] batch channel-wise (``n_passes`` times)."""
        mean, std = self.mean[None, :, None, None], self.std[None, :, None, None]
        for _ in range(self.n_passes):
            x = (x - mean) / std
        return x

    def extra_repr(self) -> str:
        passes = f", passes={self.n_passes}" if self.n_passes > 1 else ""
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}{passes}"


def passes_of(value: object) -> int:
    """The number of passes a state-dict entry ``passes`` holds; :class:`ValueError` unless it is a
    one-element tensor (or number) with a positive integer value."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_complex():
            raise ValueError(f"normalization passes must be one number, not a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise ValueError(f"normalization passes must be a positive integer, not {value!r}")
    return int(value)


def default_normalize(in_channels: int) -> NormalizeByChannelMeanStd:
    """An identity normalization (mean 0, std 1) for ``in_channels``; ``build_model`` sets real stats."""
    return NormalizeByChannelMeanStd([0.0] * in_channels, [1.0] * in_channels)


def make_normalize(
    in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> NormalizeByChannelMeanStd:
    """Build the ``normalize`` sub-module, checking that the stats match ``in_channels``."""
    if mean is None or std is None:
        return default_normalize(in_channels)
    norm = NormalizeByChannelMeanStd(mean, std)
    if norm.mean.numel() != in_channels:
        raise ValueError(
            f"normalization stats have {norm.mean.numel()} channels but the model takes {in_channels}"
        )
    return norm
