"""Model registry and factory (DESIGN.md §4, upstream-spec §8).

Every model normalizes its [0, 1] input inside (sub-module ``normalize``), exposes
``embed(x) -> [B, embed_dim]`` (penultimate features), ``embed_dim`` and ``head`` (the final
classifier), and ``forward(x) == head(embed(x))``.
"""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from utils.errors import UserError

from .checkpoint import load_into, load_state, read_checkpoint
from .compat import extract_state_dict
from .normalize import NormalizeByChannelMeanStd
from .resnet import resnet18, resnet34, resnet50
from .resnet_s import resnet20s, resnet44s, resnet56s
from .small import cnn_s, mlp
from .vgg import vgg16_bn
from .vit import vit_s

ARCHS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet20s": resnet20s,
    "resnet44s": resnet44s,
    "resnet56s": resnet56s,
    "vgg16_bn": vgg16_bn,
    "vit_s": vit_s,
    "mlp": mlp,
    "cnn_s": cnn_s,
}

# Only the torchvision-style ResNets have an ImageNet stem (the original's ``imagenet=True``).
IMAGENET_ARCHS = ("resnet18", "resnet34", "resnet50")


def build_model(arch: str, num_classes: int, *, in_channels: int = 3, image_size: int = 32,
                mean: Sequence[float], std: Sequence[float],
                imagenet_arch: bool = False) -> nn.Module:
    """Build ``arch`` (case-insensitive) with ``num_classes`` outputs and the given input stats.

    Raises :class:`UserError` for an unknown ``--arch``, for ``--imagenet_arch`` with an
    architecture other than resnet18/34/50, and for inputs an architecture cannot take.
    """
    key = str(arch).lower()
    if key not in ARCHS:
        raise UserError(f"--arch {arch!r} is not a known architecture; accepted: {', '.join(ARCHS)}")
    kwargs: dict = dict(in_channels=in_channels, image_size=image_size, mean=mean, std=std)
    if imagenet_arch:
        if key not in IMAGENET_ARCHS:
            raise UserError(f"--imagenet_arch applies only to {', '.join(IMAGENET_ARCHS)}; "
                            f"got --arch {arch!r}")
        kwargs["imagenet_arch"] = True
    return ARCHS[key](num_classes, **kwargs)


def build_for(arch: str, data, *, imagenet_arch: bool = False) -> nn.Module:
    """:func:`build_model` for a dataset (anything with ``num_classes``, ``in_channels``,
    ``image_size``, ``mean`` and ``std``, e.g. :class:`utils.data.ImageData`)."""
    return build_model(arch, data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                       mean=data.mean, std=data.std, imagenet_arch=imagenet_arch)


__all__ = ["ARCHS", "IMAGENET_ARCHS", "build_model", "build_for", "extract_state_dict", "load_into", "load_state",
           "read_checkpoint",
           "NormalizeByChannelMeanStd"]
