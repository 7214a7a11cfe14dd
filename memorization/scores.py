"""Memorization score files and memorization-proxy files.

A score file is an ``.npz`` holding one float per example of the dataset's original training split,
indexed by global id: the published ones (Feldman & Zhang's ``cifar100_infl_matrix.npz`` key
``tr_mem``; Zhao et al.'s ``estimates_results.npz`` key ``memorization``) or our own
``<dataset>_memorization.npz`` key ``memorization``, written by ``main_memorization.py`` into
``ckpts/memorization/``.

A proxy file is an ``.npz`` with ``ids`` (global ids) and one array per proxy name (confidence,
max_conf, entropy, bi_acc, ho_ret, curvature), aligned to ``ids``.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from utils.errors import UserError
from memorization.proxies import PROXY_SIGN

# dataset -> (published file name, key)
PUBLISHED: dict[str, tuple[str, str]] = {
    "cifar100": ("cifar100_infl_matrix.npz", "tr_mem"),
    "cifar10": ("estimates_results.npz", "memorization"),
}
# Other names the same published scores circulate under (the RUM release's own file name).
PUBLISHED_ALIASES: dict[str, tuple[str, str]] = {
    "cifar10": ("estimates_results_woShuffle.npz", "memorization"),
}
COMPUTED_KEY = "memorization"
SCORE_KEYS = ("memorization", "tr_mem")
# A memorization estimate is a difference of two probabilities, so it lies in [-1, 1].
SCORE_RANGE = (-1.5, 1.5)

FZ_URL = "https://pluskid.github.io/influence-memorization/"
RUM_URL = "https://github.com/kairanzhao/RUM"


def computed_score_name(dataset: str) -> str:
    """The file name ``main_memorization.py`` writes for ``dataset`` (key ``memorization``)."""
    return f"{dataset.lower()}_memorization.npz"


def score_key(dataset: str, path: str | os.PathLike) -> str | None:
    """The key to read from ``path``: the published key when it is a published file, else None
    (let :func:`load_scores` find ``memorization`` or ``tr_mem``)."""
    name = Path(path).name
    for table in (PUBLISHED, PUBLISHED_ALIASES):
        entry = table.get(dataset.lower())
        if entry and entry[0] == name:
            return entry[1]
    return None


def _where_to_get(dataset: str) -> str:
    ds = dataset.lower()
    compute = f"`python main_memorization.py --dataset {ds}` computes them"
    if ds == "cifar100":
        return f"download {PUBLISHED[ds][0]} from Feldman & Zhang's page {FZ_URL}, or {compute}"
    if ds == "cifar10":
        return (f"download {PUBLISHED[ds][0]} from Zhao et al.'s RUM release ({RUM_URL}, README link), "
                f"or {compute}")
    if ds == "imagenet":
        return f"download imagenet_index.npz from Feldman & Zhang's page {FZ_URL}"
    return compute


def find_score_file(dataset: str, *, mem_file: str | os.PathLike | None,
                    search_dirs: Iterable[str | os.PathLike]) -> Path:
    """Where the memorization scores of ``dataset`` are.

    ``--mem_file PATH`` wins. Otherwise the published file name (and its alias) is looked for in
    every search directory, then our computed file name; the first that exists is returned.
    """
    if mem_file is not None:
        p = Path(mem_file)
        if not p.is_file():
            raise UserError(f"--mem_file {str(mem_file)!r}: no such file; pass an .npz of memorization "
                            f"scores (key 'memorization' or 'tr_mem')")
        return p
    ds = dataset.lower()
    dirs = [Path(d) for d in search_dirs]
    names = [t[ds][0] for t in (PUBLISHED, PUBLISHED_ALIASES) if ds in t] + [computed_score_name(ds)]
    tried: list[str] = []
    for name in names:
        for d in dirs:
            p = d / name
            tried.append(str(p))
            if p.is_file():
                return p
    raise UserError(
        f"no memorization scores for --dataset {ds}: looked for {', '.join(tried)}; "
        f"{_where_to_get(ds)}, or pass --mem_file PATH"
    )


def _open_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` (allow_pickle=False); any failure is a one-line UserError."""
    label = f"{what} file {str(path)!r}"
    if not path.is_file():
        raise UserError(f"{label}: no such file")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise UserError(f"{label} is not an .npz archive (it holds a single array)")
        with z:
            return {k: np.asarray(z[k]) for k in z.files}
    except UserError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise UserError(f"{label} is not a readable .npz archive: {_one_line(e)}") from None
    except Exception as e:  # zlib.error and the like from a damaged archive
        raise UserError(f"{label} is damaged: {type(e).__name__}: {_one_line(e)}") from None


def load_scores(path: str | os.PathLike, key: str | None, expected_len: int) -> np.ndarray:
    """Memorization scores (float64) indexed by global id, validated.

    ``key`` None: take ``memorization`` or ``tr_mem``, whichever the file has. ``expected_len``
    is the size of the dataset's original training split.
    """
    p = Path(path)
    arrays = _open_npz(p, "memorization score")
    if key is None:
        found = [k for k in SCORE_KEYS if k in arrays]
        if not found:
            raise UserError(f"memorization score file {str(p)!r} has neither of the keys "
                            f"{', '.join(SCORE_KEYS)}; keys present: {', '.join(sorted(arrays)) or 'none'}")
        key = found[0]
    if key not in arrays:
        raise UserError(f"memorization score file {str(p)!r} has no key {key!r}; "
                        f"keys present: {', '.join(sorted(arrays)) or 'none'}")
    a = arrays[key]
    if a.ndim != 1:
        raise UserError(f"memorization score file {str(p)!r}: {key!r} must be 1-D (one score per "
                        f"training example), got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise UserError(f"memorization score file {str(p)!r}: {key!r} must hold numbers, got dtype {a.dtype}")
    if a.shape[0] != expected_len:
        raise UserError(f"memorization score file {str(p)!r}: {key!r} has {a.shape[0]} scores, expected "
                        f"{expected_len} (one per example of the original training split)")
    s = a.astype(np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        raise UserError(f"memorization score file {str(p)!r}: {key!r} has {int(bad.sum())} non-finite "
                        f"values (first at id {int(np.flatnonzero(bad)[0])})")
    lo, hi = SCORE_RANGE
    out = (s < lo) | (s > hi)
    if out.any():
        raise UserError(f"memorization score file {str(p)!r}: {key!r} has {int(out.sum())} values outside "
                        f"[{lo}, {hi}] (min {s.min():.4g}, max {s.max():.4g}); memorization scores lie in [-1, 1]")
    return s


def load_proxy(path: str | os.PathLike, name: str, train_ids: np.ndarray) -> np.ndarray:
    """Values of proxy ``name`` aligned to ``train_ids`` (float64; may contain NaN)."""
    if name not in PROXY_SIGN:
        raise UserError(f"--mem_proxy {name!r}: unknown proxy; accepted: {', '.join(PROXY_SIGN)}")
    p = Path(path)
    arrays = _open_npz(p, "proxy")
    if name not in arrays:
        present = [k for k in sorted(arrays) if k != "ids"]
        raise UserError(f"--mem_proxy {name}: proxy file {str(p)!r} has no {name!r}; "
                        f"proxies present: {', '.join(present) or 'none'}")
    if "ids" not in arrays:
        raise UserError(f"proxy file {str(p)!r} has no 'ids' array (the global ids of its values)")
    ids = arrays["ids"]
    vals = arrays[name]
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise UserError(f"proxy file {str(p)!r}: 'ids' must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    if vals.shape != ids.shape or not (np.issubdtype(vals.dtype, np.floating) or np.issubdtype(vals.dtype, np.integer)):
        raise UserError(f"proxy file {str(p)!r}: {name!r} must be numbers, one per id ({ids.shape[0]}); "
                        f"got {vals.dtype} of shape {vals.shape}")
    ids = ids.astype(np.int64)
    order = np.argsort(ids, kind="stable")
    sids = ids[order]
    if sids.size > 1 and np.any(sids[1:] == sids[:-1]):
        raise UserError(f"proxy file {str(p)!r}: 'ids' has repeated global ids")
    want = np.asarray(train_ids, dtype=np.int64)
    pos = np.searchsorted(sids, want)
    pos_c = np.minimum(pos, max(len(sids) - 1, 0))
    hit = (pos < len(sids)) & (sids[pos_c] == want) if len(sids) else np.zeros(len(want), bool)
    if not hit.all():
        miss = want[~hit]
        raise UserError(f"proxy file {str(p)!r} lacks {miss.size} of the {want.size} training ids "
                        f"(e.g. {miss[:5].tolist()}); was it computed for another dataset or split?")
    out = vals.astype(np.float64)[order][pos_c]
    if out.size and not np.isfinite(out).any():
        raise UserError(f"proxy file {str(p)!r}: {name!r} has no finite value on the {out.size} training ids "
                        f"(all NaN or infinite); recompute it")
    return out


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
