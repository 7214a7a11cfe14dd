"""VGG-16 with batch norm, the original code's ``VGG.py`` variant (upstream-spec §8).

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015, configuration D. As in the original: conv 3x3 pad 1 with ``bias=False`` + BN + ReLU,
no final max-pool, AdaptiveAvgPool(2x2) and a 2048-256-256-C classifier. Keys: ``features.*``,
``classifier.{0,2,4}.*``. ``embed`` is the 256-d input of the last Linear.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from utils.errors import UserError

from .init import init_conv_bn_
from .normalize import make_normalize

CFG_D: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                          512, 512, 512, "M", 512, 512, 512]
MIN_IMAGE_SIZE = 16  # four 2x2 max-pools need at least 16 px to leave a 1x1 map


def _make_features(in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = in_channels
    for v in CFG_D:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, int(v), kernel_size=3, padding=1, bias=False),
                       nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
            c = int(v)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG16_bn for small images; raises :class:`UserError` below 16 px."""

    def __init__(self, num_classes: int, *, in_channels: int = 3, image_size: int = 32,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        if image_size < MIN_IMAGE_SIZE:
            raise UserError(
                f"--arch vgg16_bn needs images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} px; "
                f"this data set has {image_size}x{image_size} px (use mlp, cnn_s or resnet18)")
        self.normalize = make_normalize(in_channels, mean, std)
        self.features = _make_features(in_channels)
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 2 * 2, 256), nn.ReLU(inplace=True),
            nn.Linear(256, 256), nn.ReLU(inplace=True),
            nn.Linear(256, num_classes))
        self.embed_dim: int = 256
        self._init_weights()

    def _init_weights(self) -> None:
        """Conv kaiming_normal fan_out; BN 1/0; Linear N(0, 0.01), bias 0 (original VGG.py)."""
        init_conv_bn_(self)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def head(self) -> nn.Module:
        """The final classifier (``classifier[4]``)."""
        return self.classifier[4]

    def embed(self, x: Tensor) -> Tensor:
        """256-d features: everything up to (not including) the last Linear."""
        x = torch.flatten(self.avgpool(self.features(self.normalize(x))), 1)
        return self.classifier[:4](x)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier[4](self.embed(x))


def vgg16_bn(num_classes: int, **kw) -> VGG:
    """VGG-16 (cfg D) with batch norm."""
    return VGG(num_classes, **kw)
