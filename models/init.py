"""Weight initialization shared by the torchvision-style models (He et al. 2015; the original
code's ResNet and VGG): convolutions kaiming_normal (fan_out, relu), BatchNorm weight 1, bias 0."""
from __future__ import annotations

from torch import nn


def init_conv_bn_(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
