"""Synthetic CIFAR-10-shaped data for the benchmarks and bench/gpu_check.py (no download needed).

``cifar_arrays``: uint8 images [N, 3, 32, 32] and labels; each class has its own smooth random
template, and an image is its class template plus noise, so a model can learn the classes (the
accuracy comparisons of bench/bench_train.py --accuracy mean something) while every pixel still
varies. ``write_cifar10``: the same arrays written in torchvision's on-disk layout
(``<root>/cifar10/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta``), readable by
``utils.data.load_data("cifar10", root)`` and by ``torchvision.datasets.CIFAR10`` (whose md5 check
must be skipped: see bench/bench_process.py).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from utils.data import NORMALIZATION, ImageData

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_arrays(n: int, seed: int = 0, num_classes: int = 10, noise: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """``(x uint8 [n, 3, 32, 32], y int64 [n])``, classes balanced (``n % num_classes`` extra in the
    first classes) in random order; the class templates depend on ``num_classes`` only (seed 12345),
    so train and test arrays drawn with different seeds share them."""
    tg = torch.Generator().manual_seed(12345)
    low = torch.rand(num_classes, 3, 4, 4, generator=tg)
    templates = F.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False) * 160 + 48
    rng = np.random.RandomState(seed)
    y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    g = torch.Generator().manual_seed(seed)
    x = templates[torch.as_tensor(y)] + noise * torch.randn(n, 3, 32, 32, generator=g)
    return x.round().clamp(0, 255).to(torch.uint8).numpy(), y


def image_data(n_train: int, n_test: int, seed: int = 0, val_fraction: float = 0.1,
               noise: float = 100.0) -> ImageData:
    """An in-memory CIFAR-10-shaped :class:`ImageData` (name ``cifar10``: its normalization and
    crop + flip augmentation), ``val_fraction`` of the training images held out as validation;
    ``noise``: the per-pixel standard deviation around the class template (100: a ResNet-20
    reaches 100% in 10 epochs on 2,000 images; 400: about 55%; 1,000: near chance)."""
    x, y = cifar_arrays(n_train, seed, noise=noise)
    tx, ty = cifar_arrays(n_test, seed + 1, noise=noise)
    ids = np.random.RandomState(seed).permutation(n_train)
    n_val = int(round(val_fraction * n_train))
    mean, std = NORMALIZATION["cifar10"]
    return ImageData("cifar10", torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(tx), torch.as_tensor(ty), 10,
                     np.sort(ids[n_val:]), np.sort(ids[:n_val]), 1, tuple(mean), tuple(std))


def write_cifar10(root: Path, per_file: int, n_test: int, seed: int = 0) -> Path:
    """Write ``5 * per_file`` training and ``n_test`` test images under ``root`` in torchvision's
    CIFAR-10 layout; returns ``root`` (the ``--data`` of the entry scripts)."""
    folder = Path(root) / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    x, y = cifar_arrays(5 * per_file, seed)
    tx, ty = cifar_arrays(n_test, seed + 1)

    def dump(name: str, xs: np.ndarray, ys: np.ndarray) -> None:
        d = {"batch_label": name, "data": xs.reshape(len(xs), -1), "labels": [int(v) for v in ys],
             "filenames": [f"{name}_{i}.png" for i in range(len(xs))]}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)

    for i in range(5):
        dump(f"data_batch_{i + 1}", x[i * per_file:(i + 1) * per_file], y[i * per_file:(i + 1) * per_file])
    dump("test_batch", tx, ty)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES, "num_cases_per_batch": per_file, "num_vis": 3072}, f, protocol=2)
    return Path(root)
