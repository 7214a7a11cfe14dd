"""CIFAR ResNet-20/44/56 ("ResNet-s"), upstream-spec §8.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2: three stages of
16/32/64 channels with n BasicBlocks each (6n+2 layers) and the parameter-free "option A" shortcut
(spatial ``::2`` subsampling plus zero channel padding). The original names the head ``linear``;
here it is ``fc`` and a load hook renames ``linear.*`` keys so original checkpoints still load.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .normalize import make_normalize


class _ShortcutA(nn.Module):
    """Option-A shortcut: take every 2nd pixel and zero-pad channels by ``pad`` on each side."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlockS(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + option-A shortcut, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = _ShortcutA(planes // 4)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetS(nn.Module):
    """CIFAR ResNet with ``n`` blocks per stage; features are 64-d."""

    def __init__(self, n: int, num_classes: int, *, in_channels: int = 3, image_size: int = 32,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.normalize = make_normalize(in_channels, mean, std)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.in_planes = 16
        self.layer1 = self._make_layer(16, n, 1)
        self.layer2 = self._make_layer(32, n, 2)
        self.layer3 = self._make_layer(64, n, 2)
        self.embed_dim: int = 64
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():  # original: kaiming_normal_ (fan_in) on Conv2d and Linear
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
        self._register_load_state_dict_pre_hook(_rename_linear_to_fc)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = []
        for s in [stride] + [1] * (n - 1):
            blocks.append(BasicBlockS(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    @property
    def head(self) -> nn.Module:
        """The final classifier (``fc``)."""
        return self.fc

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate 64-d features after global average pooling."""
        x = F.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.embed(x))


def _rename_linear_to_fc(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Map the original head keys ``linear.weight``/``linear.bias`` onto ``fc.*``."""
    for name in ("weight", "bias"):
        old = f"{prefix}linear.{name}"
        if old in state_dict and f"{prefix}fc.{name}" not in state_dict:
            state_dict[f"{prefix}fc.{name}"] = state_dict.pop(old)


def resnet20s(num_classes: int, **kw: Any) -> ResNetS:
    """ResNet-20 (n = 3)."""
    return ResNetS(3, num_classes, **kw)


def resnet44s(num_classes: int, **kw: Any) -> ResNetS:
    """ResNet-44 (n = 7)."""
    return ResNetS(7, num_classes, **kw)


def resnet56s(num_classes: int, **kw: Any) -> ResNetS:
    """ResNet-56 (n = 9)."""
    return ResNetS(9, num_classes, **kw)
