"""The forget-set file (DESIGN.md §6): an ``.npz`` with ``forget_ids``, ``retain_ids``, a JSON
``manifest`` (a 0-d unicode array) and optional extra id arrays stored as ``extra_<name>``; its
name follows from the manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from utils.errors import UserError
from forget_sets.select import _as_ids, parse_mem
from utils.io import atomic_save_npz, json_default

if TYPE_CHECKING:
    from utils.data import ImageData


@dataclass
class ForgetSet:
    """A forget set: forget ids (selection order), retain ids (ascending), manifest, extras."""

    forget_ids: np.ndarray
    retain_ids: np.ndarray
    manifest: dict[str, Any]
    extras: dict[str, np.ndarray] = field(default_factory=dict)


def make_forget_set(train_ids: np.ndarray, forget_ids: np.ndarray, manifest: Mapping[str, Any],
                    extras: Mapping[str, np.ndarray] | None = None) -> ForgetSet:
    """Build a :class:`ForgetSet`: retain = sorted(train_ids - forget_ids).

    Repeated forget ids (a mix or shuffle over overlapping groups) are dropped, keeping the
    first occurrence; the manifest records ``size`` and ``duplicates_dropped``.
    """
    ids = _as_ids(train_ids)
    f = np.asarray(forget_ids, dtype=np.int64)
    _, first = np.unique(f, return_index=True)
    dedup = f[np.sort(first)]
    outside = np.setdiff1d(dedup, ids)
    if outside.size:
        raise ValueError(f"{outside.size} forget ids are not training ids, e.g. {outside[:5].tolist()}")
    m = dict(manifest)
    m["size"] = int(dedup.size)
    m["duplicates_dropped"] = int(f.size - dedup.size)
    retain = np.setdiff1d(ids, dedup)  # sorted, unique
    ex = {k: np.asarray(v, dtype=np.int64) for k, v in (extras or {}).items()}
    return ForgetSet(forget_ids=dedup, retain_ids=retain.astype(np.int64), manifest=m, extras=ex)


def save_forget_set(path: str | os.PathLike, fs: ForgetSet) -> None:
    """Write ``fs`` atomically as an ``.npz`` (the path is used as given).

    The bytes depend on the content only: ``np.savez_compressed`` stamps every zip entry with the
    fixed date 1980-01-01 (``zipfile.ZipInfo``'s default) and the manifest is written with sorted
    keys, so equal forget sets give equal files wherever and whenever they are written."""
    arrays: dict[str, np.ndarray] = {
        "forget_ids": np.asarray(fs.forget_ids, dtype=np.int64),
        "retain_ids": np.asarray(fs.retain_ids, dtype=np.int64),
        "manifest": np.array(json.dumps(fs.manifest, sort_keys=True, default=json_default)),
    }
    for name, arr in fs.extras.items():
        if not name.isidentifier():
            raise ValueError(f"extra array name {name!r} must be an identifier")
        arrays["extra_" + name] = np.asarray(arr, dtype=np.int64)
    atomic_save_npz(path, **arrays)


def load_forget_set(path: str | os.PathLike) -> ForgetSet:
    """Read a forget-set file; a missing or unreadable file is a :class:`UserError`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"forget set file {str(p)!r} does not exist; forget sets are written by "
                        f"main_forget.py / main_rum.py under ckpts/forget_sets/")
    try:
        z = np.load(p, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with z:
            keys = set(z.files)
            need = {"forget_ids", "retain_ids", "manifest"}
            if not need <= keys:
                raise ValueError(f"missing arrays {sorted(need - keys)} (has {sorted(keys)})")
            forget = np.asarray(z["forget_ids"])
            retain = np.asarray(z["retain_ids"])
            manifest = json.loads(str(z["manifest"][()]))
            extras = {k[len("extra_"):]: np.asarray(z[k]).astype(np.int64, copy=False)
                      for k in sorted(keys) if k.startswith("extra_")}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise UserError(f"forget set file {str(p)!r} is not a readable forget set: {_one_line(e)}") from None
    except Exception as e:  # zlib errors and the like from a damaged archive
        raise UserError(f"forget set file {str(p)!r} is damaged: {type(e).__name__}: {_one_line(e)}") from None
    for name, arr in (("forget_ids", forget), ("retain_ids", retain)):
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise UserError(f"forget set file {str(p)!r}: {name} must be a 1-D integer array, "
                            f"got {arr.dtype} of shape {arr.shape}")
    if not isinstance(manifest, dict):
        raise UserError(f"forget set file {str(p)!r}: manifest is not a JSON object")
    check_ids(forget, retain, f"forget set file {str(p)!r}")
    return ForgetSet(forget_ids=forget.astype(np.int64, copy=False),
                     retain_ids=retain.astype(np.int64, copy=False),
                     manifest=manifest, extras=extras)


def _dupes(ids: np.ndarray) -> np.ndarray:
    """The distinct values that occur more than once in ``ids`` (ascending)."""
    values, counts = np.unique(np.asarray(ids), return_counts=True)
    return values[counts > 1]


def check_ids(forget_ids: np.ndarray, retain_ids: np.ndarray, label: str) -> None:
    """Refuse (one-line :class:`UserError` starting with ``label``) an empty forget or retain set
    and repeated forget or retain ids."""
    if len(forget_ids) == 0:
        raise UserError(f"{label}: the forget set is empty")
    if len(retain_ids) == 0:
        raise UserError(f"{label}: the retain set is empty (every training example is in the forget set)")
    for what, ids in (("forget", forget_ids), ("retain", retain_ids)):
        d = _dupes(ids)
        if d.size:
            raise UserError(f"{label}: {d.size} {what} ids occur more than once, e.g. {d[:5].tolist()}")


def check_fits(fs: ForgetSet, data: ImageData, label: str) -> None:
    """The forget set must belong to this dataset and split, and its forget and retain ids must
    partition the training split: no repeats, no overlap, nothing outside it, nothing missing,
    neither part empty. Anything else is a one-line :class:`UserError` starting with ``label``."""
    ds = fs.manifest.get("dataset")
    if ds is not None and str(ds).lower() != data.name:
        raise UserError(f"{label}: a forget set of {ds}, but --dataset is {data.name}")
    split = fs.manifest.get("split_seed")
    if split is not None and int(split) != int(data.split_seed):
        raise UserError(f"{label}: built with --split_seed {split}, but --split_seed is {data.split_seed}")
    forget = np.asarray(fs.forget_ids, dtype=np.int64)
    retain = np.asarray(fs.retain_ids, dtype=np.int64)
    check_ids(forget, retain, label)
    where = f"{data.name} (split seed {data.split_seed})"
    bad = np.setdiff1d(np.concatenate([forget, retain]), data.train_ids)
    if bad.size:
        raise UserError(f"{label}: {bad.size} ids are not training ids of {where}, e.g. {bad[:5].tolist()}")
    both = np.intersect1d(forget, retain)
    if both.size:
        raise UserError(f"{label}: forget and retain ids overlap ({both.size} ids, e.g. {both[:5].tolist()})")
    missing = np.setdiff1d(data.train_ids, np.concatenate([forget, retain]))
    if missing.size:
        raise UserError(f"{label}: the retain ids are not the complement of the forget ids in the training split "
                        f"of {where}: {missing.size} training ids are in neither, e.g. {missing[:5].tolist()}")


def forget_set_name(manifest: Mapping[str, Any]) -> str:
    """A readable, deterministic file stem for a forget set.

    ``<dataset>_<what>[_n<size>][_seed<seed>][_split<split_seed>][_shuffle]`` where ``what`` is
    ``mem-<level>``, ``proxy-<name>-<level>``, ``es-g<group>``, ``random`` or ``class-<c>[-<c>...]``.
    The seed appears where the selection depends on it (random, class, shuffle); the split seed
    where it is not the default 1. Examples: ``digits_mem-high_n100``,
    ``cifar10_random_n3000_seed2``, ``cifar10_class-3_seed2``,
    ``cifar10_proxy-confidence-mix_n3000``, ``cifar10_es-g14_n3000``,
    ``cifar10_mem-mix_n3000_seed2_shuffle``.
    """
    def need(key: str) -> Any:
        if manifest.get(key) is None:
            raise ValueError(f"forget-set manifest of kind {manifest.get('kind')!r} needs {key!r}")
        return manifest[key]

    dataset = str(need("dataset")).lower()
    kind = need("kind")
    shuffle = bool(manifest.get("shuffle"))
    size = manifest.get("n", manifest.get("size"))
    with_seed = shuffle
    if kind == "mem":
        what = f"mem-{parse_mem(need('level'))}"
    elif kind == "proxy":
        what = f"proxy-{need('proxy')}-{parse_mem(need('level'))}"
    elif kind == "es":
        what = f"es-g{int(need('group'))}"
    elif kind == "random":
        what, with_seed = "random", True
    elif kind == "class":
        classes = need("classes")
        classes = [classes] if isinstance(classes, (int, np.integer)) else list(classes)
        what, with_seed = "class-" + "-".join(str(int(c)) for c in classes), True
        size = manifest.get("n")  # None: the whole class
    else:
        raise ValueError(f"unknown forget-set kind {kind!r}")
    parts = [dataset, what]
    if size is not None:
        parts.append(f"n{int(size)}")
    if with_seed:
        parts.append(f"seed{int(need('seed'))}")
    split_seed = manifest.get("split_seed")
    if split_seed is not None and int(split_seed) != 1:
        parts.append(f"split{int(split_seed)}")
    if shuffle:
        parts.append("shuffle")
    return "_".join(parts)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
