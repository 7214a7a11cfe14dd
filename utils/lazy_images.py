"""Images decoded from disk on demand, indexed like a uint8 tensor (DESIGN.md §3).

:class:`LazyImages` stands in for ``ImageData.x`` / ``ImageData.test_x`` of a dataset too large for
memory (ImageNet). It supports exactly what the toolkit does with those tensors:

* ``x[ids]`` with a LongTensor / numpy array / list of global ids (any shape, e.g. the ``[M, b]``
  id matrix of the vmapped ensemble), a slice or an int -> a uint8 CPU tensor ``[*ids.shape, 3,
  size, size]``;
* ``len(x)``, ``x.shape`` (``torch.Size([N, 3, size, size])``), ``x.dtype``, ``x.ndim``,
  ``x.device`` (always the CPU);
* ``x.to(device)`` returns ``x`` itself: lazy data stays on the host, and ``utils.batches`` moves
  each decoded batch to the training device (``x[gid.to(x.device)].to(device)``).

Each image is decoded with PIL, converted to RGB, resized so that its shorter side is ``resize``
(bilinear, the longer side ``int(resize * long / short)``) and center-cropped to ``size`` x
``size``: torchvision's ``Resize(resize)`` + ``CenterCrop(size)`` on PIL images, the standard
ImageNet evaluation transform, pixel for pixel. Training augmentation (random crop with padding,
horizontal flip) is applied afterwards to the whole batch by ``utils.batches``, as for every
dataset, so a batch is a deterministic function of its ids.

Why threads, not DataLoader worker processes: the toolkit draws every batch by index (``x[gid]``)
with one CPU generator that fixes order and augmentation, so runs are reproducible and resumable.
A ``DataLoader`` would replace that by its own sampler/worker pipeline (processes, per-worker
seeding, pickled datasets) that every training and evaluation loop would need to adopt. A thread
pool keeps ``x[gid]`` a plain synchronous call whose result does not depend on the number of
threads, and it still decodes in parallel because PIL releases the GIL while decoding and resizing.
The thread count is ``workers`` (``load_data(..., workers=)``; the toolkit's ``--workers``);
``None`` means :func:`default_workers`, ``0`` decodes in the calling thread.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

from utils.errors import UserError


def default_workers() -> int:
    """Decoding threads when none are asked for: ``min(8, os.cpu_count())``."""
    return max(1, min(8, os.cpu_count() or 1))


def load_image(path: str, size: int, resize: int) -> np.ndarray:
    """``path`` as uint8 ``[3, size, size]``: RGB, shorter side resized to ``resize`` (bilinear),
    center crop ``size`` (torchvision's ``Resize(resize)`` + ``CenterCrop(size)`` on PIL images)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            if w <= h:
                nw, nh = resize, int(resize * h / w)
            else:
                nw, nh = int(resize * w / h), resize
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.BILINEAR)
            top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
            im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:  # missing, truncated or not an image
        raise UserError(f"{path}: cannot read image ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    return arr.transpose(2, 0, 1)


class LazyImages:
    """``N`` image files behaving like a uint8 tensor ``[N, 3, size, size]`` (see the module doc)."""

    dtype = torch.uint8
    ndim = 4
    device = torch.device("cpu")
    is_cuda = False

    def __init__(self, paths: Sequence[str], size: int = 224, resize: int = 256, workers: int | None = None):
        if size < 1 or resize < size:
            raise ValueError(f"LazyImages: need 1 <= size <= resize, got size={size}, resize={resize}")
        if workers is not None and workers < 0:
            raise ValueError(f"LazyImages: workers must be >= 0, got {workers}")
        self.paths = [str(p) for p in paths]
        self.image_size = int(size)
        self.resize = int(resize)
        self.workers = default_workers() if workers is None else int(workers)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # --- tensor-like surface -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> torch.Size:
        return torch.Size([len(self.paths), 3, self.image_size, self.image_size])

    def size(self, dim: int | None = None):
        """As ``torch.Tensor.size`` (the crop size is :attr:`image_size`)."""
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return 4

    def to(self, *args, **kwargs) -> "LazyImages":
        """Itself: lazy data stays on the host; decoded batches are moved to the device."""
        return self

    def cpu(self) -> "LazyImages":
        return self

    def __repr__(self) -> str:
        return (f"LazyImages(n={len(self)}, size={self.image_size}, resize={self.resize}, workers={self.workers}, "
                f"first={self.paths[0] if self.paths else None!r})")

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, slice):
            return self._decode(np.arange(len(self))[idx])
        if isinstance(idx, (int, np.integer)) or (isinstance(idx, torch.Tensor) and idx.ndim == 0
                                                  and not idx.is_floating_point()
                                                  and idx.dtype != torch.bool):
            return self._decode(np.asarray([int(idx)]))[0]
        if isinstance(idx, torch.Tensor):
            idx = idx.detach().cpu().numpy()
        arr = np.asarray(idx)
        if arr.dtype == np.bool_:
            if arr.shape != (len(self),):
                raise IndexError(f"boolean index of shape {arr.shape} for {len(self)} images")
            arr = np.flatnonzero(arr)
        elif arr.size == 0:
            arr = arr.astype(np.int64)
        elif not np.issubdtype(arr.dtype, np.integer):
            raise IndexError(f"LazyImages: indices must be integers, got {arr.dtype}")
        return self._decode(arr)

    # --- decoding ------------------------------------------------------------------------------

    def _decode(self, ids: np.ndarray) -> torch.Tensor:
        """uint8 ``[*ids.shape, 3, size, size]``."""
        n = len(self)
        flat = ids.reshape(-1).astype(np.int64)
        bad = (flat < -n) | (flat >= n)
        if bad.any():
            raise IndexError(f"index {int(flat[bad][0])} is out of bounds for {n} images")
        flat = np.where(flat < 0, flat + n, flat)
        out = torch.empty((len(flat), 3, self.image_size, self.image_size), dtype=torch.uint8)
        view = out.numpy()

        def one(k: int) -> None:
            view[k] = load_image(self.paths[flat[k]], self.image_size, self.resize)

        if self.workers == 0 or len(flat) <= 1:
            for k in range(len(flat)):
                one(k)
        else:
            for _ in self._executor().map(one, range(len(flat))):  # re-raises the first error
                pass
        return out.reshape(*ids.shape, 3, self.image_size, self.image_size)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="lazy-images")
            return self._pool

    def close(self) -> None:
        """Stop the decoding threads (a later access starts them again)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    # Pickling (e.g. a copy sent to another process) carries the file list, not the threads.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pool"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
