"""Forget sets: how they are chosen, and the file that holds one.

Every id here is a *global id*: the example's index in the dataset's original training split
(DESIGN.md §3). ``train_ids`` is the sorted int64 array of the training split after validation
was removed; arrays of per-example values passed alongside it (``scores``, ``values``,
``labels``) are aligned to it position by position. Every function returns global ids
(``np.int64``), never positions.

Selection rules follow the original code (reference/upstream-spec.md §4.5, §5.3;
reference/rum-spec.md §1.2):

* memorization groups: stable sort by score, descending; high = first n, low = last n (still in
  descending order); mid = the n closest to 0.5 (a stable re-sort of the descending list);
* proxy groups: the same, with mid = the n closest to the proxy's median; for proxies that fall
  as memorization rises the roles of high and low are swapped, so "high" always means high
  memorization;
* mix = high[:n//3] + mid[:n//3] + low[(-n)//3:];
* random forget sets are drawn with ``RandomState(seed - 1)``.

A forget set on disk (DESIGN.md §6) is an ``.npz`` with ``forget_ids``, ``retain_ids``, a JSON
``manifest`` (a 0-d unicode array) and optional extra id arrays stored as ``extra_<name>``.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from utils.errors import UserError
from utils.io import atomic_save_npz, json_default

LEVELS = ("low", "mid", "high", "mix")
GROUPS = ("high", "mid", "low")

# The original code's integer values of --mem.
_MEM_INTS = {"0": "low", "2": "mid", "4": "high"}

# Proxy name -> True when the proxy is *negatively* correlated with memorization
# (a high value means a well-learned, little-memorized example).
PROXY_SIGN: dict[str, bool] = {
    "confidence": True,
    "max_conf": True,
    "entropy": True,
    "bi_acc": True,
    "ho_ret": False,
    "curvature": False,
}


# --------------------------------------------------------------------------------------------
# Group selection
# --------------------------------------------------------------------------------------------

def _as_ids(train_ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(train_ids)
    if ids.ndim != 1:
        raise ValueError(f"train_ids must be 1-D, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"train_ids must be integers, got dtype {ids.dtype}")
    return ids.astype(np.int64, copy=False)


def _check_n(n: int, available: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise UserError(f"--num_indexes_to_replace {n!r}: must be a positive integer")
    n = int(n)
    if n < 1:
        raise UserError(f"--num_indexes_to_replace {n}: must be a positive integer")
    if n > available:
        raise UserError(
            f"--num_indexes_to_replace {n}: larger than the {available} {what} to choose from; "
            f"accepted: 1..{available}"
        )
    return n


def _top_mid_bottom(values: np.ndarray, n: int, centre: float) -> tuple[np.ndarray, ...]:
    """Positions of (high, mid, low) by the original rule.

    ``order`` is the stable descending order (ties keep position order, as Python's
    ``sorted(..., reverse=True)`` does); high/low are its first/last n; mid is the first n of a
    stable re-sort of ``order`` by distance to ``centre``. The distance is computed in the
    values' own floating dtype, as the original computed it on the scores as loaded.
    """
    order = np.argsort(-values, kind="stable")
    high = order[:n]
    low = order[len(order) - n:]
    desc = values[order]
    dist = np.abs(desc - desc.dtype.type(centre))
    mid = order[np.argsort(dist, kind="stable")[:n]]
    return high, mid, low


def _float_values(values: np.ndarray, n_ids: int, name: str) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim != 1 or v.shape[0] != n_ids:
        raise ValueError(f"{name} must be 1-D with one value per train id ({n_ids}), got shape {v.shape}")
    if not np.issubdtype(v.dtype, np.floating):
        v = v.astype(np.float64)
    return v


def memorization_groups(train_ids: np.ndarray, scores: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """High/mid/low memorization groups of size n (upstream-spec §5.3).

    ``scores[k]`` is the score of ``train_ids[k]``. Returns global ids in selection order:
    high (highest first), mid (closest to 0.5 first), low (descending: the lowest score last).
    """
    ids = _as_ids(train_ids)
    s = _float_values(scores, len(ids), "scores")
    if not np.all(np.isfinite(s)):
        raise ValueError("memorization scores contain NaN or infinite values")
    n = _check_n(n, len(ids), "training examples")
    high, mid, low = _top_mid_bottom(s, n, 0.5)
    return {"high": ids[high], "mid": ids[mid], "low": ids[low]}


def proxy_groups(train_ids: np.ndarray, values: np.ndarray, n: int, *, negative: bool) -> dict[str, np.ndarray]:
    """High/mid/low *memorization* groups chosen by a proxy (rum-spec §1.2).

    Non-finite proxy values (the original turns the entropy proxy's NaNs into +inf and drops
    them) are dropped first. The rule is applied to the proxy itself: top n, bottom n, and the n
    closest to the median. With ``negative`` (the proxy falls as memorization rises) the proxy's
    bottom n become "high" and its top n "low"; both are then reversed so that, like
    :func:`memorization_groups`, "high" lists the most memorized example first and "low" lists
    it last. Set membership is exactly the original's.
    """
    ids = _as_ids(train_ids)
    v = _float_values(values, len(ids), "proxy values")
    keep = np.isfinite(v)
    ids, v = ids[keep], v[keep]
    n = _check_n(n, len(ids), "training examples with a finite proxy value")
    centre = float(np.median(v))
    top, mid, bottom = _top_mid_bottom(v, n, centre)
    if negative:
        return {"high": ids[bottom[::-1]], "mid": ids[mid], "low": ids[top[::-1]]}
    return {"high": ids[top], "mid": ids[mid], "low": ids[bottom]}


def parse_mem(value: str) -> str:
    """``--mem``: low|mid|high|mix (any case) or the original's 0|2|4 (low, mid, high)."""
    text = str(value).strip().lower()
    if text in LEVELS:
        return text
    if text in _MEM_INTS:
        return _MEM_INTS[text]
    raise UserError(
        f"--mem {value!r}: not a memorization level; accepted: low, mid, high, mix, "
        f"or the original's 0 (low), 2 (mid), 4 (high)"
    )


def select_level(groups: Mapping[str, np.ndarray], level: str, n: int) -> np.ndarray:
    """The forget ids of one level.

    high -> high[:n], mid -> mid[:n], low -> low[-n:] (the n most extreme of each, which equals
    the group built with size n); mix -> high[:n//3] + mid[:n//3] + low[(-n)//3:] exactly as the
    original (``(-n)//3`` floors, so n=1000 takes 333 + 333 + 334). The groups must have been
    built with at least n entries. A mix may repeat an id when the groups overlap (tiny data);
    :func:`make_forget_set` drops such repeats.
    """
    level = parse_mem(level)
    n = int(n)
    if n < 1:
        raise UserError(f"--num_indexes_to_replace {n}: must be a positive integer")
    for g in GROUPS:
        if len(groups[g]) < n:
            raise ValueError(f"group {g!r} has {len(groups[g])} ids; level {level!r} with n={n} needs groups built with n")
    high, mid, low = (np.asarray(groups[g], dtype=np.int64) for g in GROUPS)
    if level == "high":
        return high[:n].copy()
    if level == "mid":
        return mid[:n].copy()
    if level == "low":
        return low[len(low) - n:].copy()
    return np.concatenate([high[: n // 3], mid[: n // 3], low[(-n) // 3:]])


def shuffle_groups(groups: Mapping[str, np.ndarray], n: int, seed: int) -> dict[str, np.ndarray]:
    """The original's ``--shuffle``: three random groups drawn from the pooled memorization groups.

    Pool high + low + mid (3n ids, which may repeat), shuffle with ``RandomState(seed)``, then
    high = first n, mid = the middle n, low = the last n.
    """
    n = int(n)
    pool = np.concatenate([select_level(groups, "high", n), select_level(groups, "low", n),
                           select_level(groups, "mid", n)])
    np.random.RandomState(seed).shuffle(pool)
    return {"high": pool[:n].copy(), "mid": pool[n: 2 * n].copy(), "low": pool[2 * n:].copy()}


def eval_subsets(groups: Mapping[str, np.ndarray], k: int = 1000) -> dict[str, np.ndarray]:
    """The original's extra evaluation sets: high[:k], mid[:k], low[-k:] (all of a group if shorter)."""
    low = np.asarray(groups["low"], dtype=np.int64)
    return {
        "high_mem": np.asarray(groups["high"], dtype=np.int64)[:k].copy(),
        "mid_mem": np.asarray(groups["mid"], dtype=np.int64)[:k].copy(),
        "low_mem": low[max(len(low) - k, 0):].copy(),
    }


def random_forget(train_ids: np.ndarray, labels_of_train_ids: np.ndarray, n: int | None,
                  classes: list[int] | None, seed: int) -> np.ndarray:
    """Random or class-wise forget set (upstream-spec §4.5, §5.2).

    Candidates: every train id when ``classes`` is None or contains -1, else the ids whose label
    is in ``classes``. ``n`` None -> all candidates (class-wise forgetting, ascending ids); else
    ``RandomState(seed - 1).choice(candidates, n, replace=False)``, as the original draws.
    """
    ids = _as_ids(train_ids)
    labels = np.asarray(labels_of_train_ids)
    if labels.shape != ids.shape:
        raise ValueError(f"labels must align with train_ids: shapes {labels.shape} vs {ids.shape}")
    if classes is None or -1 in [int(c) for c in classes]:
        candidates = ids
        where = "training examples"
    else:
        cls = [int(c) for c in classes]
        present = set(np.unique(labels).tolist())
        missing = [c for c in cls if c not in present]
        if missing:
            accepted = f"-1 (all) or a class in 0..{max(present)}" if present else "-1 (all)"
            raise UserError(
                f"--class_to_replace {','.join(map(str, cls))}: no training example has class "
                f"{','.join(map(str, missing))}; accepted: {accepted}"
            )
        candidates = ids[np.isin(labels, cls)]
        where = f"training examples of class {','.join(map(str, cls))}"
    if n is None:
        return candidates.copy()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise UserError(f"--num_indexes_to_replace {n!r}: must be a positive integer")
    n = int(n)
    if n > len(candidates):
        raise UserError(
            f"--num_indexes_to_replace {n}: larger than the {len(candidates)} {where}; "
            f"accepted: 1..{len(candidates)}"
        )
    if int(seed) < 1:
        raise UserError(
            f"--seed {seed}: random forget sets are drawn with RandomState(seed - 1) as in the "
            f"original, so the seed must be >= 1"
        )
    rng = np.random.RandomState(int(seed) - 1)
    return np.asarray(rng.choice(candidates, n, replace=False), dtype=np.int64)


# --------------------------------------------------------------------------------------------
# The forget-set file
# --------------------------------------------------------------------------------------------

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
    """Write ``fs`` atomically as an ``.npz`` (the path is used as given)."""
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
    return ForgetSet(forget_ids=forget.astype(np.int64, copy=False),
                     retain_ids=retain.astype(np.int64, copy=False),
                     manifest=manifest, extras=extras)


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
