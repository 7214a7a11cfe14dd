"""Batches drawn by index from in-memory uint8 tensors, augmented as whole batches (DESIGN.md §3).

Randomness (order, crop offsets, flips) comes from one CPU ``torch.Generator`` so a run is
reproducible on any device and its state can be checkpointed for an exact ``--resume``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F


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


def iterate(
    x: torch.Tensor,
    y: torch.Tensor,
    ids: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    augment: tuple[int, bool] | None = None,
    drop_last: bool = False,
    labels: torch.Tensor | None = None,
) -> Iterator[Batch]:
    """Yield batches of the examples ``ids`` (global ids indexing ``x``/``y``).

    ``labels`` (same length as ``ids``) overrides ``y`` (random relabelling); ``augment`` is
    ``(pad, flip)`` or None. Images are converted to float in [0, 1] on ``device``.
    """
    ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    n = len(ids_t)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        pos = order[start:start + batch_size]
        gid = ids_t[pos]
        gid_dev = gid.to(x.device)
        xb = x[gid_dev].to(device, non_blocking=True).float().div_(255)
        yb = (labels[pos.to(labels.device)] if labels is not None else y[gid_dev]).to(device, non_blocking=True)
        if augment is not None and (augment[0] > 0 or augment[1]):
            xb = augment_batch(xb, augment[0], augment[1], generator if generator is not None else torch.default_generator)
        yield Batch(xb, yb, gid)


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)
