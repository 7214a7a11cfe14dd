"""Datasets as in-memory uint8 tensors keyed by global ids (DESIGN.md §3).

Every training example has a *global id*: its index in the dataset's original training split
(CIFAR-10: 0..49999). ``ImageData.x[i]`` is the image with global id ``i``. The validation split
takes ``int(0.1 * n_c)`` examples of every class c, drawn with ``np.random.RandomState(split_seed)``
class by class (upstream-spec §4.4); the rest, sorted ascending, is ``train_ids``. One split serves
every stage.

Supported: ``digits`` (scikit-learn's bundled 8x8 digits, the embedded dataset), ``cifar10``,
``cifar100``, ``svhn``, ``tinyimagenet`` (the ``tiny-imagenet-200`` folder layout), and
``imagenet``, streamed from disk (below). Files are read in torchvision's on-disk layout under
``--data`` (``cifar10/cifar-10-batches-py``, ``cifar100/cifar-100-python``, ``svhn/*.mat``,
``tiny-imagenet-200``, ``imagenet/{train,val}``).

ImageNet is too large for memory: its ``x``/``test_x`` are :class:`utils.lazy_images.LazyImages`,
which list the files at load time (no image is decoded then) and decode ``x[ids]`` on demand into
uint8 ``[B, 3, S, S]`` (resize 256 + center crop 224 by default), so every consumer of ``x[ids]``,
``x.shape``, ``len(x)`` and ``data.to(device)`` works unchanged; ``data.to(device)`` leaves them on
the host and ``utils.batches`` moves each batch. Global ids are torchvision ``ImageFolder`` indices
of ``imagenet/train`` (the ids of ``imagenet_mem_subset.py``); the ``imagenet/val`` folder (same
classes) is the test set.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from utils.batches import Augment
from utils.errors import UserError

# name -> (mean, std) per channel, for the normalization inside the model (upstream-spec §4.2).
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": ((0.3053,), (0.3759,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1201, 0.1231, 0.1052)),
    "tinyimagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# Training augmentation per dataset (upstream-spec §4.3): crop padding in pixels, horizontal flip,
# RandAugment (num_ops, magnitude). Digits and SVHN are not mirror-symmetric, so they are never
# flipped; SVHN was not augmented by the original code; CIFAR-100 adds RandAugment(2, 15) as the
# original's CIFAR-100 transform does.
AUGMENT: dict[str, Augment] = {
    "digits": Augment(1, False),
    "cifar10": Augment(4, True),
    "cifar100": Augment(4, True, randaugment=(2, 15)),
    "svhn": Augment(0, False),
    "tinyimagenet": Augment(4, True),
    # 224 px crops: 16 px of padding shifts by up to 7% of the side (CIFAR's 4 px: 12.5%) while
    # keeping the zero border small. Applied to the center crop, like every dataset's augmentation.
    "imagenet": Augment(16, True),
}

ALIASES = {
    "digits": "digits",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "svhn": "svhn",
    "tinyimagenet": "tinyimagenet",
    "tiny_imagenet": "tinyimagenet",
    "tiny-imagenet": "tinyimagenet",
    "imagenet": "imagenet",
    "imagenet1k": "imagenet",
    "imagenet-1k": "imagenet",
    "imagenet_1k": "imagenet",
    "ilsvrc2012": "imagenet",
}
DATASETS = tuple(sorted(set(ALIASES.values())))
# Datasets whose images stay on disk (``x``/``test_x`` are LazyImages, never moved to a device).
STREAMED = frozenset({"imagenet"})


def canonical_dataset(name: str) -> str:
    """Case-insensitive dataset name -> canonical key (``CIFAR10`` -> ``cifar10``)."""
    key = ALIASES.get(str(name).lower())
    if key is None:
        raise UserError(f"--dataset {name!r}: unknown dataset; accepted: {', '.join(DATASETS)}")
    return key


@dataclass
class ImageData:
    """A dataset held in memory (streamed ones: LazyImages ``x``/``test_x``). ``x``/``y`` are indexed
    by global id."""

    name: str
    x: torch.Tensor  # uint8 [N, C, H, W], the original training split (LazyImages when streamed)
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
    def augment(self) -> Augment:
        """The training augmentation of this dataset (:data:`AUGMENT`)."""
        return AUGMENT[self.name]

    def labels(self, ids: np.ndarray) -> np.ndarray:
        return self.y.numpy()[np.asarray(ids, dtype=np.int64)]

    def to(self, device: torch.device) -> "ImageData":
        """A copy whose tensors live on ``device`` (id arrays stay numpy; LazyImages stay on the host)."""
        return ImageData(
            self.name, self.x.to(device), self.y.to(device), self.test_x.to(device),
            self.test_y.to(device), self.num_classes, self.train_ids, self.val_ids,
            self.split_seed, self.mean, self.std,
        )


def augment_record(data: ImageData | str, enabled: bool) -> dict | None:
    """The JSON-able record of the training augmentation a run applies (``Augment.describe()``:
    ``random_crop_padding``, ``horizontal_flip``, ``randaugment``), for its config.json; None when
    augmentation is off (``enabled`` False, i.e. ``--no_aug``) or the dataset has none. ``data`` is
    an :class:`ImageData` or a dataset name."""
    aug = AUGMENT[canonical_dataset(data if isinstance(data, str) else data.name)]
    return aug.describe() if enabled and aug.active else None


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


def load_data(name: str, root: str | Path = "datasets", *, split_seed: int = 1, download: bool = False,
              image_size: int | None = None, workers: int | None = None) -> ImageData:
    """Load a dataset into memory (or, for :data:`STREAMED` ones, list its files). Raises
    :class:`UserError` when its files are missing.

    ``image_size`` and ``workers`` concern streamed datasets only: the crop size (ImageNet: 224,
    resized first to ``int(image_size * 8 / 7)``, i.e. 256) and the decoding threads
    (None: ``utils.lazy_images.default_workers()``, ``min(8, cpu count)``; 0: the calling thread).
    """
    name = canonical_dataset(name)
    root = Path(root)
    if name in STREAMED:
        x, y, tx, ty, num_classes = _STREAMED[name](root, download, image_size=image_size, workers=workers)
    else:
        if image_size is not None:
            raise UserError(f"--dataset {name} is held in memory at its own size; image_size applies to "
                            f"{', '.join(sorted(STREAMED))} only")
        x, y, tx, ty, num_classes = _LOADERS[name](root, download)
        x, tx = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(tx))
    if len(y) == 0 or len(ty) == 0:
        raise UserError(f"--data: {name} under {root} has no {'training' if len(y) == 0 else 'test'} images")
    train_ids, val_ids = validation_split(y, split_seed)
    mean, std = NORMALIZATION[name]
    return ImageData(name, x, torch.from_numpy(y.astype(np.int64)), tx, torch.from_numpy(ty.astype(np.int64)),
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


def _unreadable(path: Path, e: BaseException) -> UserError:
    """The one-line error for a damaged data file: its path and the exception, whitespace collapsed."""
    detail = " ".join(f"{type(e).__name__}: {e}".split())
    return UserError(f"--data: cannot read {path}: {detail[:300]}")


def _entry(d: dict, key: str):
    """``d[key]`` from a CIFAR pickle whose keys are bytes (Python 2 files, read with
    ``encoding="bytes"``) or str (files written by Python 3); ValueError when it has no such key."""
    if not isinstance(d, dict):
        raise ValueError(f"holds a {type(d).__name__}, not a dict")
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise ValueError(f"no {key!r} entry")


def _check_labels(path: Path, y: np.ndarray, n: int, num_classes: int) -> None:
    """A UserError naming ``path`` unless ``y`` is ``n`` labels in ``0..num_classes-1``."""
    if y.ndim != 1 or len(y) != n:
        raise UserError(f"--data: {path} holds {n} images but {y.size} labels")
    bad = y[(y < 0) | (y >= num_classes)]
    if len(bad):
        raise UserError(f"--data: {path} has label {int(bad[0])}, outside 0..{num_classes - 1}")


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
    key = "fine_labels" if hundred else "labels"
    num_classes = 100 if hundred else 10

    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n in names:
            p = folder / n
            try:
                with open(p, "rb") as f:
                    d = pickle.load(f, encoding="bytes")  # keys: bytes (Python 2 files) or str
                x = np.asarray(_entry(d, "data"), dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(_entry(d, key), dtype=np.int64)
            except FileNotFoundError:
                raise _missing(sub, p, "the archive is incomplete") from None
            except Exception as e:  # truncated or corrupt pickle, not a dict, wrong keys, wrong sizes
                raise _unreadable(p, e) from None
            _check_labels(p, y, len(x), num_classes)
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    x, y = read(files[0])
    tx, ty = read(files[1])
    return x, y, tx, ty, num_classes


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

        try:  # loadmat raises ValueError, TypeError, MatReadError, NotImplementedError, ... on damage
            m = loadmat(p)
            X = m["X"]
            if X.ndim != 4 or X.shape[2] != 3:
                raise ValueError(f"'X' has shape {X.shape}, expected (H, W, 3, N)")
            x = np.transpose(X, (3, 2, 0, 1)).astype(np.uint8)
            y = np.asarray(m["y"]).astype(np.int64).reshape(-1)
        except Exception as e:
            raise _unreadable(p, e) from None
        y[y == 10] = 0
        _check_labels(p, y, len(x), 10)
        out += [x, y]
    return out[0], out[1], out[2], out[3], 10


def _tinyimagenet(root: Path, download: bool):
    """The ``tiny-imagenet-200`` folder: ``wnids.txt``, ``train/<wnid>/images/*.JPEG`` and
    ``val/images`` with ``val/val_annotations.txt`` (the official validation set serves as test).
    Class ``i`` is the ``i``-th wnid of ``wnids.txt``; a damaged tree is a :class:`UserError`."""
    from PIL import Image

    folder = root / "tiny-imagenet-200"
    if not (folder / "wnids.txt").is_file():
        raise _missing("tinyimagenet", folder, "download tiny-imagenet-200.zip from the Stanford CS231n "
                       "page and unzip it there")

    def text(p: Path) -> str:
        try:
            return p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _missing("tinyimagenet", p, "the tiny-imagenet-200 folder is incomplete") from None
        except (OSError, UnicodeDecodeError) as e:
            raise _unreadable(p, e) from None

    wnids_file = folder / "wnids.txt"
    wnids = text(wnids_file).split()
    if not wnids:
        raise UserError(f"--data: {wnids_file} lists no wnids")
    index = {w: i for i, w in enumerate(wnids)}
    if len(index) != len(wnids):
        dup = next(w for i, w in enumerate(wnids) if index[w] != i)
        raise UserError(f"--data: {wnids_file} lists wnid {dup!r} twice")
    shape: list[tuple[int, ...]] = []  # the first image's shape; every other image must match

    def read(paths: list[Path]) -> np.ndarray:
        out = []
        for p in paths:
            try:
                with Image.open(p) as im:
                    a = np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
            except FileNotFoundError:
                raise _missing("tinyimagenet", p, "the tiny-imagenet-200 folder is incomplete") from None
            except Exception as e:  # PIL.UnidentifiedImageError, truncated image, ...
                raise _unreadable(p, e) from None
            if not shape:
                shape.append(a.shape)
            if a.shape != shape[0]:
                raise UserError(f"--data: {p} is {a.shape[2]}x{a.shape[1]} pixels, the other images "
                                f"{shape[0][2]}x{shape[0][1]}")
            out.append(a)
        return np.stack(out)

    train = []
    for w in wnids:
        images = folder / "train" / w / "images"
        found = sorted(images.glob("*.JPEG"))
        if not found:
            raise UserError(f"--data: {images} (wnid {w!r} of {wnids_file}) has no .JPEG images")
        train += [(p, index[w]) for p in found]
    ann = folder / "val" / "val_annotations.txt"
    val = []
    for n, line in enumerate(text(ann).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise UserError(f"--data: {ann}: line {n} is not '<file>\\t<wnid>...': {line.strip()[:80]!r}")
        if parts[1] not in index:
            raise UserError(f"--data: {ann}: line {n} names wnid {parts[1]!r}, which is not in {wnids_file}")
        val.append((folder / "val" / "images" / parts[0], index[parts[1]]))
    if not val:
        raise UserError(f"--data: {ann} lists no images")
    x = read([p for p, _ in train])
    tx = read([p for p, _ in val])
    return x, np.array([c for _, c in train]), tx, np.array([c for _, c in val]), len(wnids)


IMAGENET_HOW = ("download ILSVRC2012 (train and val) from https://image-net.org and arrange train/ and "
                "val/ with one folder per class (the same class folders in both; e.g. the official "
                "valprep.sh sorts val/ into class folders); --download cannot fetch it")


def image_folder(folder: Path, class_to_idx: dict[str, int] | None = None, *, flag: str = "--data"):
    """``(samples, class_to_idx)`` in torchvision ``ImageFolder`` order (classes sorted, files sorted
    within a class, ``IMG_EXTENSIONS``), listing names only: a sample's index is its global id.
    ``flag`` is the flag named when ``folder`` is not an ImageFolder."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, found = find_classes(str(folder))
        if class_to_idx is not None and classes != sorted(class_to_idx):
            extra, lacking = sorted(set(classes) - set(class_to_idx)), sorted(set(class_to_idx) - set(classes))
            raise UserError(f"--data: {folder} must have the class folders of train/ "
                            f"(extra: {', '.join(extra[:5]) or 'none'}; missing: {', '.join(lacking[:5]) or 'none'})")
        class_to_idx = found if class_to_idx is None else class_to_idx
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as e:
        raise UserError(f"{flag}: {folder} is not an ImageFolder ({' '.join(str(e).split())[:200]}); "
                        f"{IMAGENET_HOW}") from None
    return samples, class_to_idx


def _imagenet(root: Path, download: bool, *, image_size: int | None = None, workers: int | None = None):
    """``imagenet/train`` and ``imagenet/val`` as ImageFolders, streamed (see the module doc). Only
    the file names are read here. ``--download`` cannot fetch ImageNet (it needs a login)."""
    from utils.lazy_images import LazyImages

    folder = root / "imagenet"
    for split in ("train", "val"):
        if not (folder / split).is_dir():
            raise _missing("imagenet", folder / split, IMAGENET_HOW)
    train, class_to_idx = image_folder(folder / "train")
    val, _ = image_folder(folder / "val", class_to_idx)
    size = 224 if image_size is None else int(image_size)
    if size < 1:
        raise UserError(f"image_size must be positive, got {image_size}")
    resize = size * 8 // 7  # 224 -> 256, the standard ratio

    def lazy(samples):
        return LazyImages([p for p, _ in samples], size=size, resize=resize, workers=workers)

    return (lazy(train), np.array([c for _, c in train], dtype=np.int64), lazy(val),
            np.array([c for _, c in val], dtype=np.int64), len(class_to_idx))


_STREAMED = {
    "imagenet": _imagenet,
}

_LOADERS = {
    "digits": _digits,
    "cifar10": lambda r, d: _cifar(r, d, False),
    "cifar100": lambda r, d: _cifar(r, d, True),
    "svhn": _svhn,
    "tinyimagenet": _tinyimagenet,
}
