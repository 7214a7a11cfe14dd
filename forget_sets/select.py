"""Forget-set selection rules (pure numpy): which examples a forget set of each kind holds.

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
* entanglement groups: equal groups by distance to the embedding centroid (RUM's ES forget sets).

The file format is :mod:`forget_sets.file`.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from utils.errors import UserError

LEVELS = ("low", "mid", "high", "mix")
GROUPS = ("high", "mid", "low")

# The original code's integer values of --mem.
_MEM_INTS = {"0": "low", "2": "mid", "4": "high"}



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


def group_means(train_ids: np.ndarray, scores: np.ndarray, n: int) -> dict[str, float]:
    """Mean score of each memorization group of size ``n`` (:func:`memorization_groups`);
    ``scores[k]`` is the score of ``train_ids[k]``."""
    groups = memorization_groups(train_ids, scores, n)
    pos = {int(g): k for k, g in enumerate(np.asarray(train_ids, dtype=np.int64))}
    s = np.asarray(scores, dtype=np.float64)
    return {name: float(s[[pos[int(i)] for i in ids]].mean()) for name, ids in groups.items()}


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
# Entanglement (ES) groups: RUM cluster.py::get_distance / get_fs_dist_only (rum-spec §4)
# --------------------------------------------------------------------------------------------

def centroid_distance_groups(
    embeddings: np.ndarray, ids: np.ndarray, n_groups: int
) -> list[np.ndarray]:
    """Partition examples into equal groups by distance to the global embedding centroid.

    ``d_i = ||phi_i - mean_j phi_j||_2``; examples are sorted by ``d`` ascending (stable mergesort,
    so ties keep input order) and cut into ``n_groups`` consecutive groups of
    ``floor(N / n_groups)`` examples; the ``N mod n_groups`` farthest examples are dropped
    (rum-spec §4, RUM ``cluster.py``: CIFAR 45k examples -> 15 groups x 3000). Group 0 is closest
    to the centroid (lowest ES), the last group farthest (highest ES).

    Args:
        embeddings: ``[N, D]`` embeddings of all candidate examples.
        ids: ``[N]`` global example ids, aligned with ``embeddings``.
        n_groups: number of groups (>= 1, <= N).

    Returns:
        ``n_groups`` arrays of ids (dtype of ``ids``), each of length ``floor(N / n_groups)``.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    ids = np.asarray(ids)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D [N, D], got shape {emb.shape}")
    if ids.ndim != 1 or ids.shape[0] != emb.shape[0]:
        raise ValueError(f"ids must be 1-D with {emb.shape[0]} entries, got shape {ids.shape}")
    n = emb.shape[0]
    if n_groups < 1 or n_groups > n:
        raise UserError(
            f"cannot cut {n} examples into {n_groups} entanglement groups: the number of groups "
            f"must lie in [1, {n}]"
        )
    dist = np.linalg.norm(emb - emb.mean(axis=0), axis=1)
    order = np.argsort(dist, kind="mergesort")
    size = n // n_groups
    return [ids[order[g * size:(g + 1) * size]].copy() for g in range(n_groups)]


def _mix_group_indices(n_groups: int) -> tuple[int, int, int]:
    if n_groups == 15:
        return 3, 12, 14
    last = n_groups - 1
    low = min(int(round(n_groups * 3 / 15)), last)
    mid = min(int(round(n_groups * 12 / 15)), last)
    return low, mid, last


def es_forget_ids(groups: list[np.ndarray], group_index: int, n: int) -> np.ndarray:
    """Forget-set ids from the entanglement groups of :func:`centroid_distance_groups`.

    * ``group_index`` in ``[0, len(groups))``: the first ``n`` ids of that group.
    * ``group_index == -1`` ("mix"): ``n // 3`` ids from each of the low, mid and high groups, the
      high group also supplying the remainder, so ``n//3 + n//3 + (n - 2*(n//3)) = n`` ids in the
      order low, mid, high. The low/mid/high groups are RUM's CIFAR indices 3, 12 and 14 of 15
      groups (rum-spec §4). For another number of groups ``g`` they are scaled: low =
      ``round(3g/15)``, mid = ``round(12g/15)``, high = ``g - 1`` (capped at ``g - 1``). This is our
      choice: RUM's TinyImageNet (100 groups) mix uses groups {0,1,2}, {49,50,51}, {97,98,99}
      instead. When fewer than 8 groups make two of these indices coincide, the later part takes
      the next unused ids of the shared group, so the ids are always distinct.

    Args:
        groups: output of :func:`centroid_distance_groups`.
        group_index: ``--group_index``: a group, or -1 for the mix.
        n: ``--num_indexes_to_replace``: forget-set size (>= 1).

    Raises:
        UserError: ``group_index`` out of range, ``n < 1``, or a group too small for ``n``.
    """
    g = len(groups)
    if g == 0:
        raise UserError("no entanglement groups to choose a forget set from")
    if n < 1:
        raise UserError(f"--num_indexes_to_replace must be >= 1, got {n}")
    if group_index == -1:
        picks = _mix_group_indices(g)
        k = n // 3
        counts = (k, k, n - 2 * k)
        used: dict[int, int] = {}
        parts = []
        for gi, cnt in zip(picks, counts):
            start = used.get(gi, 0)
            grp = np.asarray(groups[gi])
            if start + cnt > grp.shape[0]:
                raise UserError(
                    f"--num_indexes_to_replace {n} with --group_index -1 needs {cnt} ids from "
                    f"entanglement group {gi}, which has {grp.shape[0] - start} left "
                    f"(groups of {grp.shape[0]}; at most {3 * grp.shape[0]} in all)"
                )
            parts.append(grp[start:start + cnt])
            used[gi] = start + cnt
        return np.concatenate(parts)
    if not 0 <= group_index < g:
        raise UserError(
            f"--group_index {group_index} is out of range: use 0..{g - 1} or -1 (mix)"
        )
    grp = np.asarray(groups[group_index])
    if n > grp.shape[0]:
        raise UserError(
            f"--num_indexes_to_replace {n} exceeds the size of entanglement group "
            f"{group_index} ({grp.shape[0]}); use at most {grp.shape[0]}"
        )
    return grp[:n].copy()
