"""Datasets as in-memory uint8 tensors keyed by global ids (DESIGN.md §3).

Every training example has a *global id*: its index in the dataset's original training split
(CIFAR-10: 0..49999). ``ImageData.x[i]`` is the image with global id ``i``. The validation split
takes ``int(0.1 * n_c)`` examples of every class c, drawn with ``np.random.RandomState(split_seed)``
class by class (upstream-spec §4.4); the rest, sorted ascending, is ``train_ids``. One split serves
every stage.

Supported: ``digits`` (scikit-learn's bundled 8x8 digits, the embedded dataset), ``cifar10``,
``cifar100``, ``svhn``, ``tinyimagenet`` (the ``tiny-imagenet-200`` folder layout). Files are read
in torchvision's on-disk layout under ``--data`` (``cifar10/cifar-10-batches-py``,
``cifar100/cifar-100-python``, ``svhn/*.mat``, ``tiny-imagenet-200``).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from utils.errors import UserError

# name -> (mean, std) per channel, for the normalization inside the model (upstream-spec §4.2).
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": ((0.3053,), (0.3759,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1201, 0.1231, 0.1052)),
    "tinyimagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# Augmentation per dataset: (crop padding in pixels, horizontal flip). Digits and SVHN are not
# mirror-symmetric, so they are never flipped; SVHN was not augmented by the original code.
AUGMENT: dict[str, tuple[int, bool]] = {
    "digits": (1, False),
    "cifar10": (4, True),
    "cifar100": (4, True),
    "svhn": (0, False),
    "tinyimagenet": (4, True),
}

ALIASES = {
    "digits": "digits",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "svhn": "svhn",
    "tinyimagenet": "tinyimagenet",
    "tiny_imagenet": "tinyimagenet",
    "tiny-imagenet": "tinyimagenet",
}
DATASETS = tuple(sorted(set(ALIASES.values())))


def canonical_dataset(name: str) -> str:
    """Case-insensitive dataset name -> canonical key (``CIFAR10`` -> ``cifar10``)."""
    key = ALIASES.get(str(name).lower())
    if key is None:
        raise UserError(f"--dataset {name!r}: unknown dataset; accepted: {', '.join(DATASETS)}")
    return key


@dataclass
class ImageData:
    """A dataset held in memory. ``x``/``y`` are indexed by global id."""

    name: str
    x: torch.Tensor  # uint8 [N, C, H, W], the original training split
    y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    train_ids: np.ndarray  # sorted global ids of the training part
    val_ids: np.ndarray  # sorted global ids of the validation part
    split_seed: int = 1
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    @property
    def in_channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x.shape[-1])

    @property
    def augment(self) -> tuple[int, bool]:
        return AUGMENT[self.name]

    def labels(self, ids: np.ndarray) -> np.ndarray:
        return self.y.numpy()[np.asarray(ids, dtype=np.int64)]

    def to(self, device: torch.device) -> "ImageData":
        """A copy whose tensors live on ``device`` (id arrays stay numpy)."""
        return ImageData(
            self.name, self.x.to(device), self.y.to(device), self.test_x.to(device),
            self.test_y.to(device), self.num_classes, self.train_ids, self.val_ids,
            self.split_seed, self.mean, self.std,
        )


def validation_split(labels: np.ndarray, split_seed: int, fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Per-class validation split: for c = 0..max(labels), ``RandomState(split_seed).choice`` of
    ``int(fraction * n_c)`` indices of class c without replacement; train = the sorted rest
    (upstream-spec §4.4). Returns ``(train_ids, val_ids)``, both sorted int64."""
    rng = np.random.RandomState(split_seed)
    labels = np.asarray(labels)
    val = []
    for c in range(int(labels.max()) + 1):
        idx = np.where(labels == c)[0]
        val.append(rng.choice(idx, int(fraction * len(idx)), replace=False))
    val_ids = np.sort(np.concatenate(val)).astype(np.int64)
    train_ids = np.setdiff1d(np.arange(len(labels), dtype=np.int64), val_ids)
    return train_ids, val_ids


def load_data(name: str, root: str | Path = "datasets", *, split_seed: int = 1, download: bool = False) -> ImageData:
    """Load a dataset into memory. Raises :class:`UserError` when its files are missing."""
    name = canonical_dataset(name)
    root = Path(root)
    x, y, tx, ty, num_classes = _LOADERS[name](root, download)
    train_ids, val_ids = validation_split(y, split_seed)
    mean, std = NORMALIZATION[name]
    return ImageData(name, torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)),
                     torch.from_numpy(np.ascontiguousarray(tx)), torch.from_numpy(ty.astype(np.int64)),
                     num_classes, train_ids, val_ids, split_seed, mean, std)


# --- individual datasets -------------------------------------------------------------------------

def _digits(root: Path, download: bool):
    """scikit-learn's 1,797 8x8 digits, pixel values 0..16 scaled to uint8 0..255. No official test
    split exists: every 5th image (index % 5 == 0, 360 images) is the test set, the other 1,437 are
    the training split whose global ids are 0..1436."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    is_test = np.arange(len(img)) % 5 == 0
    return img[~is_test], d.target[~is_test], img[is_test], d.target[is_test], 10


def _missing(name: str, path: Path, how: str) -> UserError:
    return UserError(f"--data: {name} not found at {path}; {how}")


def _cifar(root: Path, download: bool, hundred: bool):
    sub = "cifar100" if hundred else "cifar10"
    folder = root / sub / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    if not folder.is_dir() and download:
        from torchvision.datasets import CIFAR10, CIFAR100

        for train in (True, False):
            (CIFAR100 if hundred else CIFAR10)(str(root / sub), train=train, download=True)
    if not folder.is_dir():
        raise _missing(sub, folder, "pass --download to fetch it with torchvision, or unpack the python "
                       "version of the archive there")
    files = (["train"], ["test"]) if hundred else ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
    key = b"fine_labels" if hundred else b"labels"

    def read(names):
        xs, ys = [], []
        for n in names:
            p = folder / n
            try:
                with open(p, "rb") as f:
                    d = pickle.load(f, encoding="bytes")
                xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(d[key], dtype=np.int64))
            except FileNotFoundError:
                raise _missing(sub, p, "the archive is incomplete") from None
            except Exception as e:  # corrupt pickle, wrong keys, wrong sizes
                raise UserError(f"--data: cannot read {p}: {type(e).__name__}: {e}") from None
        return np.concatenate(xs), np.concatenate(ys)

    x, y = read(files[0])
    tx, ty = read(files[1])
    return x, y, tx, ty, 100 if hundred else 10


def _svhn(root: Path, download: bool):
    folder = root / "svhn"
    if download:
        from torchvision.datasets import SVHN

        for split in ("train", "test"):
            SVHN(str(folder), split=split, download=True)
    out = []
    for split in ("train", "test"):
        p = folder / f"{split}_32x32.mat"
        if not p.is_file():
            raise _missing("svhn", p, "pass --download to fetch it with torchvision")
        from scipy.io import loadmat

        m = loadmat(p)
        x = np.transpose(m["X"], (3, 2, 0, 1)).astype(np.uint8)
        y = m["y"].astype(np.int64).squeeze()
        y[y == 10] = 0
        out += [x, y]
    return out[0], out[1], out[2], out[3], 10


def _tinyimagenet(root: Path, download: bool):
    """The ``tiny-imagenet-200`` folder: ``wnids.txt``, ``train/<wnid>/images/*.JPEG`` and
    ``val/images`` with ``val/val_annotations.txt`` (the official validation set serves as test)."""
    from PIL import Image

    folder = root / "tiny-imagenet-200"
    if not (folder / "wnids.txt").is_file():
        raise _missing("tinyimagenet", folder, "download tiny-imagenet-200.zip from the Stanford CS231n "
                       "page and unzip it there")
    wnids = (folder / "wnids.txt").read_text().split()
    index = {w: i for i, w in enumerate(wnids)}

    def read(paths):
        return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8).transpose(2, 0, 1) for p in paths])

    train = [(p, index[w]) for w in wnids for p in sorted((folder / "train" / w / "images").glob("*.JPEG"))]
    val = []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            val.append((folder / "val" / "images" / parts[0], index[parts[1]]))
    x = read([p for p, _ in train])
    tx = read([p for p, _ in val])
    return x, np.array([c for _, c in train]), tx, np.array([c for _, c in val]), len(wnids)


_LOADERS = {
    "digits": _digits,
    "cifar10": lambda r, d: _cifar(r, d, False),
    "cifar100": lambda r, d: _cifar(r, d, True),
    "svhn": _svhn,
    "tinyimagenet": _tinyimagenet,
}
