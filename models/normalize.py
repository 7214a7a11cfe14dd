"""Per-channel normalization applied inside every model (upstream-spec §4.2, DESIGN.md §4).

The original code defines ``NormalizeByChannelMeanStd`` as the first sub-module of every model and
registers ``mean``/``std`` as buffers, so they appear in the state dict as ``normalize.mean`` and
``normalize.std``. Inputs are float tensors in [0, 1] of shape [B, C, H, W].
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class NormalizeByChannelMeanStd(nn.Module):
    """``x -> (x - mean[c]) / std[c]`` with ``mean``/``std`` stored as buffers of shape [C]."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten().clone()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten().clone()
        if mean_t.numel() != std_t.numel():
            raise ValueError(f"mean has {mean_t.numel()} channels but std has {std_t.numel()}")
        if bool((std_t == 0).any()):
            raise ValueError("std must be non-zero in every channel")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: Tensor) -> Tensor:
        """Normalize a [B, C, H, W] batch channel-wise."""
        return (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


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
