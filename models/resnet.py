"""ResNet-18/34/50 with the original code's state-dict key names (upstream-spec §8).

Architecture after He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, in the
torchvision layout the original code uses, so that its checkpoints load with ``strict=True``.
Keys: ``normalize.mean``, ``normalize.std``, ``conv1.weight``, ``bn1.*``,
``layer{1..4}.{i}.conv1/bn1/conv2/bn2[/conv3/bn3].*``, ``layer{K}.0.downsample.{0,1}.*``, ``fc.*``.

CIFAR stem by default (3x3 conv, stride 1, no max-pool); the ImageNet stem (7x7 conv, stride 2,
max-pool 3/2/1) with ``imagenet_arch=True`` (the original's ``imagenet=True``, flag ``--imagenet_arch``).
"""

from __future__ import annotations

from typing import Sequence, Type, Union

import torch
from torch import Tensor, nn

from .init import init_conv_bn_
from .normalize import make_normalize


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU (He et al. 2016, Fig. 2)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 (reduce) - 3x3 (stride) - 1x1 (x4 expand), BN after each (He et al. 2016, Fig. 5)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        width = planes
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = Type[Union[BasicBlock, Bottleneck]]


class ResNet(nn.Module):
    """Torchvision-style ResNet with an inner ``normalize`` module (upstream-spec §8).

    ``image_size`` is accepted for a uniform constructor signature and unused (global pooling).
    """

    def __init__(self, block: Block, layers: Sequence[int], num_classes: int, *,
                 in_channels: int = 3, image_size: int = 32, imagenet_arch: bool = False,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.normalize = make_normalize(in_channels, mean, std)
        self.inplanes = 64
        if imagenet_arch:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
                                   if imagenet_arch else nn.Identity())
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.embed_dim: int = 512 * block.expansion
        self.fc = nn.Linear(self.embed_dim, num_classes)
        self._init_weights()

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            # keys layerK.0.downsample.0 (conv) and layerK.0.downsample.1 (BN)
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def _init_weights(self) -> None:
        """Conv: kaiming_normal (fan_out, relu); BN: weight 1, bias 0; Linear: PyTorch default."""
        init_conv_bn_(self)

    @property
    def head(self) -> nn.Module:
        """The final classifier (``fc``)."""
        return self.fc

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features [B, 512*expansion]: normalize, stem, stages, global average pool."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.embed(x))


def resnet18(num_classes: int, **kw) -> ResNet:
    """ResNet-18: BasicBlock [2, 2, 2, 2]."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, **kw)


def resnet34(num_classes: int, **kw) -> ResNet:
    """ResNet-34: BasicBlock [3, 4, 6, 3]."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, **kw)


def resnet50(num_classes: int, **kw) -> ResNet:
    """ResNet-50: Bottleneck [3, 4, 6, 3] (expansion 4, 2048-d features)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, **kw)
