"""Batches drawn by index from in-memory uint8 tensors, augmented as whole batches (DESIGN.md §3).

Randomness (order, crop offsets, flips, RandAugment's ops and signs) comes from one CPU
``torch.Generator`` so a run is reproducible on any device and its state can be checkpointed for an
exact ``--resume``. Augmentation (:class:`Augment`) works on the uint8 images, on the device, before
their conversion to float in [0, 1]; per batch it draws the crop offsets, then the flips, then
(CIFAR-100) the RandAugment ops and signs, in that order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from utils.randaugment import FILL, INTERPOLATION, NUM_MAGNITUDE_BINS, apply_ops, draw_ops


@dataclass
class Batch:
    x: torch.Tensor  # float [B, C, H, W] in [0, 1], on the device
    y: torch.Tensor  # int64 [B], on the device
    ids: torch.Tensor  # int64 [B] global ids, on the CPU
    scale: float = 1.0  # loss multiplier (data-parallel slices of a global batch)


def augment_batch(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with ``pad`` pixels of zero padding and a random horizontal flip, drawn
    independently per image (the torchvision ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip``
    of the original pipeline, applied to a whole batch at once)."""
    b, c, h, w = x.shape
    if pad > 0:
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        x = padded[torch.arange(b, device=x.device)[:, None, None, None],
                   torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if flip:
        do = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(do[:, None, None, None], x.flip(3), x)
    return x


@dataclass(frozen=True)
class Augment:
    """A dataset's training augmentation: random crop with ``pad`` pixels of zero padding, random
    horizontal flip when ``flip``, then, when ``randaugment`` is ``(num_ops, magnitude)``,
    torchvision's RandAugment (``utils.randaugment``), each drawn independently per image."""

    pad: int = 0
    flip: bool = False
    randaugment: tuple[int, int] | None = None

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip or self.randaugment is not None

    def describe(self) -> dict:
        """A JSON-able record of the pipeline (for a run's config.json)."""
        ra = None
        if self.randaugment is not None:
            ra = {"num_ops": int(self.randaugment[0]), "magnitude": int(self.randaugment[1]),
                  "num_magnitude_bins": NUM_MAGNITUDE_BINS, "interpolation": INTERPOLATION, "fill": FILL}
        return {"random_crop_padding": int(self.pad), "horizontal_flip": bool(self.flip), "randaugment": ra}

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The augmented batch ``x`` ([B, C, H, W], uint8 when RandAugment is on), draws from ``generator``."""
        if self.pad > 0 or self.flip:
            x = augment_batch(x, self.pad, self.flip, generator)
        if self.randaugment is not None:
            ops, negate = draw_ops(len(x), self.randaugment[0], generator)
            x = apply_ops(x, ops, negate, self.randaugment[1])
        return x

    def stacked(self, x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """``x`` [M, B, C, H, W]: batch k augmented with ``generators[k]``, drawing exactly what
        ``self(x[k], generators[k])`` draws; RandAugment runs once on all M * B images."""
        if self.pad > 0 or self.flip:
            x = torch.stack([augment_batch(x[k], self.pad, self.flip, g) for k, g in enumerate(generators)])
        if self.randaugment is not None:
            draws = [draw_ops(x.shape[1], self.randaugment[0], g) for g in generators]
            flat = apply_ops(x.flatten(0, 1), torch.cat([d[0] for d in draws]), torch.cat([d[1] for d in draws]),
                             self.randaugment[1])
            x = flat.view(x.shape)
        return x


def as_augment(augment: Augment | tuple[int, bool] | None) -> Augment | None:
    """An :class:`Augment` from one or from the older ``(pad, flip)`` tuple (None stays None)."""
    if augment is None or isinstance(augment, Augment):
        return augment
    pad, flip = augment
    return Augment(int(pad), bool(flip))


def iterate(
    x: torch.Tensor,
    y: torch.Tensor,
    ids: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    augment: Augment | tuple[int, bool] | None = None,
    drop_last: bool = False,
    labels: torch.Tensor | None = None,
) -> Iterator[Batch]:
    """Yield batches of the examples ``ids`` (global ids indexing ``x``/``y``).

    ``labels`` (same length as ``ids``) overrides ``y`` (random relabelling); ``augment`` is an
    :class:`Augment` (or ``(pad, flip)``) or None. Images are augmented as uint8 on ``device``, then
    converted to float in [0, 1].
    """
    aug = as_augment(augment)
    aug_gen = generator if generator is not None else torch.default_generator
    ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    n = len(ids_t)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        pos = order[start:start + batch_size]
        gid = ids_t[pos]
        gid_dev = gid.to(x.device)
        xb = x[gid_dev].to(device, non_blocking=True)
        yb = (labels[pos.to(labels.device)] if labels is not None else y[gid_dev]).to(device, non_blocking=True)
        if aug is not None and aug.active:
            xb = aug(xb, aug_gen)
        yield Batch(xb.float().div_(255), yb, gid)


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)
