"""Small models for scikit-learn's 8x8 grayscale digits (DESIGN.md §4; not in the original code).

``mlp``: flatten -> 256 -> ReLU -> 128 -> ReLU -> ``fc``. ``cnn_s``: conv3x3(32)-BN-ReLU,
conv3x3(64)-BN-ReLU, max-pool 2, conv3x3(128)-BN-ReLU, global average pool, ``fc`` (128 -> C).
Both accept any ``in_channels`` / ``image_size``; like every model they normalize inside.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .normalize import make_normalize


class MLP(nn.Module):
    """Two-hidden-layer perceptron on flattened pixels; 128-d features."""

    def __init__(self, num_classes: int, *, in_channels: int = 1, image_size: int = 8,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.normalize = make_normalize(in_channels, mean, std)
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * image_size * image_size, 256), nn.ReLU(inplace=True),
            nn.Linear(256, 128), nn.ReLU(inplace=True))
        self.embed_dim: int = 128
        self.fc = nn.Linear(128, num_classes)

    @property
    def head(self) -> nn.Module:
        """The final classifier (``fc``)."""
        return self.fc

    def embed(self, x: Tensor) -> Tensor:
        """128-d hidden features."""
        return self.features(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.embed(x))


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class CNNS(nn.Module):
    """Three-conv network; 128-d features after global average pooling."""

    def __init__(self, num_classes: int, *, in_channels: int = 1, image_size: int = 8,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.normalize = make_normalize(in_channels, mean, std)
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, 32), *_conv_bn_relu(32, 64),
            nn.MaxPool2d(2, ceil_mode=True),  # ceil_mode keeps 1-px inputs valid
            *_conv_bn_relu(64, 128), nn.AdaptiveAvgPool2d(1))
        self.embed_dim: int = 128
        self.fc = nn.Linear(128, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def head(self) -> nn.Module:
        """The final classifier (``fc``)."""
        return self.fc

    def embed(self, x: Tensor) -> Tensor:
        """128-d pooled features."""
        return torch.flatten(self.features(self.normalize(x)), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.embed(x))


def mlp(num_classes: int, **kw) -> MLP:
    """MLP for small images."""
    return MLP(num_classes, **kw)


def cnn_s(num_classes: int, **kw) -> CNNS:
    """Small CNN for small images."""
    return CNNS(num_classes, **kw)
