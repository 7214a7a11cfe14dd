"""ViT-S/4 for small images (upstream-spec §8, DESIGN.md §4).

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021. The original wraps timm's
``vit_small_patch16_224`` with ``img_size=32, patch_size=4`` (depth 12, 6 heads, width 384,
MLP 1536, class-token pooling); this rewrite builds the same shape on torchvision's
``VisionTransformer``, stored as the sub-module ``vit`` (so keys are ``vit.*``; timm's key names
differ and original ViT checkpoints are not loadable).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from utils.errors import UserError

from .normalize import make_normalize


def patch_size_for(image_size: int) -> int:
    """4-px patches (the original's choice for 32 px); 2-px patches for images of 8 px or less."""
    return 2 if image_size <= 8 else 4


class ViTS(nn.Module):
    """``normalize`` followed by a torchvision ViT; ``embed`` is the class-token feature."""

    def __init__(self, num_classes: int, *, in_channels: int = 3, image_size: int = 32,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        patch = patch_size_for(image_size)
        if image_size % patch != 0:
            raise UserError(f"--arch vit_s needs an image size divisible by its patch size {patch}; "
                            f"this data set has {image_size}x{image_size} px")
        # imported here: torchvision takes ~2 s to import, which every script would pay at startup
        from torchvision.models import VisionTransformer

        self.normalize = make_normalize(in_channels, mean, std)
        self.vit = VisionTransformer(image_size=image_size, patch_size=patch, num_layers=12,
                                     num_heads=6, hidden_dim=384, mlp_dim=1536,
                                     num_classes=num_classes)
        if in_channels != 3:
            conv = nn.Conv2d(in_channels, 384, kernel_size=patch, stride=patch)
            # same init as torchvision's patch projection: truncated normal, std sqrt(1/fan_in)
            fan_in = in_channels * patch * patch
            nn.init.trunc_normal_(conv.weight, std=math.sqrt(1.0 / fan_in))
            nn.init.zeros_(conv.bias)
            self.vit.conv_proj = conv
        self.embed_dim: int = 384

    @property
    def head(self) -> nn.Module:
        """The final classifier (``vit.heads``)."""
        return self.vit.heads

    def embed(self, x: Tensor) -> Tensor:
        """Class-token features [B, 384] after the encoder's final LayerNorm."""
        x = self.vit._process_input(self.normalize(x))
        cls = self.vit.class_token.expand(x.shape[0], -1, -1)
        x = self.vit.encoder(torch.cat([cls, x], dim=1))
        return x[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        return self.vit.heads(self.embed(x))


def vit_s(num_classes: int, **kw) -> ViTS:
    """ViT-Small with 4-px patches (2-px for images of 8 px or less)."""
    return ViTS(num_classes, **kw)
