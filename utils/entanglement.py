"""Entanglement score (ES) between retain and forget embeddings, and ES-based forget sets.

Sources
-------
* ES: Zhao et al., "What makes unlearning hard and what to do about it" (RUM, NeurIPS 2024),
  ``surgical_plugins/overlap.py::calculate_FC`` (rum-spec §4): intra-set variance over inter-set
  variance, with the retain and forget sets as the two "classes".
* Normalized ES: the sharp-unlearn release's ``analysis.py::compute_variance_entanglement``
  (upstream-spec §7.5).
* ES forget sets: RUM ``cluster.py::get_distance`` / ``get_fs_dist_only`` (rum-spec §4).
"""
from __future__ import annotations

import math

import numpy as np

from utils.errors import UserError

__all__ = [
    "entanglement_score",
    "entanglement_score_normalized",
    "centroid_distance_groups",
    "es_forget_ids",
]


def _two_sets(emb_retain: np.ndarray, emb_forget: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(emb_retain, dtype=np.float64)
    f = np.asarray(emb_forget, dtype=np.float64)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(
            f"embeddings must be 2-D with the same width, got {r.shape} and {f.shape}"
        )
    if r.shape[0] == 0 or f.shape[0] == 0:
        raise ValueError(f"embedding sets must be non-empty, got {r.shape[0]} and {f.shape[0]}")
    return r, f


def _intra(x: np.ndarray, mu_x: np.ndarray) -> float:
    return float(np.mean(np.sum((x - mu_x) ** 2, axis=1)))


def entanglement_score(emb_retain: np.ndarray, emb_forget: np.ndarray) -> float:
    """RUM's entanglement score of a forget set within the retain set.

    ``ES = [ mean_{r in R} ||phi_r - mu_R||^2 + mean_{f in F} ||phi_f - mu_F||^2 ]
           / [ 1/2 (||mu_R - mu||^2 + ||mu_F - mu||^2) ]``

    with ``mu_R``, ``mu_F`` the exact set centroids and ``mu = (mu_R + mu_F) / 2`` the unweighted
    mean of the two centroids (rum-spec §4; RUM computed the centroids as a mean of batch means,
    which is only approximate for a ragged last batch: here they are exact). Computed in float64.
    Higher = more entangled = harder to unlearn.

    Args:
        emb_retain: ``[Nr, D]`` retain embeddings (e.g. avgpool features of the original model).
        emb_forget: ``[Nf, D]`` forget embeddings.

    Returns:
        ES >= 0. When the two centroids coincide (zero denominator) the sets cannot be told apart
        by their means: ``inf`` is returned, or ``nan`` if the numerator is 0 too.
    """
    r, f = _two_sets(emb_retain, emb_forget)
    mu_r = r.mean(axis=0)
    mu_f = f.mean(axis=0)
    mu = 0.5 * (mu_r + mu_f)
    num = _intra(r, mu_r) + _intra(f, mu_f)
    den = 0.5 * (float(np.sum((mu_r - mu) ** 2)) + float(np.sum((mu_f - mu) ** 2)))
    if den == 0.0:
        return math.nan if num == 0.0 else math.inf
    return num / den


def entanglement_score_normalized(
    emb_retain: np.ndarray, emb_forget: np.ndarray, scale: float = 1300.0
) -> float:
    """The sharp-unlearn variant of ES: on unit-norm embeddings, rescaled and clipped to [0, 1].

    Each embedding is L2-normalized (a zero vector stays zero); ``mu_R``, ``mu_F`` are the set
    means and ``mu`` the mean over all ``Nr + Nf`` embeddings (not the centroid average), then

    ``ES_raw = [ mean_r ||e_r - mu_R||^2 + mean_f ||e_f - mu_F||^2 ]
               / [ 1/2 (||mu_R - mu||^2 + ||mu_F - mu||^2) ]``

    and the result is ``clip(ES_raw / scale, 0, 1)``, or 0 when the denominator is 0
    (upstream-spec §7.5, variance entanglement).

    Args:
        emb_retain: ``[Nr, D]`` retain embeddings.
        emb_forget: ``[Nf, D]`` forget embeddings.
        scale: divisor of the raw score (the release uses 1300).
    """
    r, f = _two_sets(emb_retain, emb_forget)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")

    def unit(x: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm > 0, norm, 1.0)

    r, f = unit(r), unit(f)
    mu_r = r.mean(axis=0)
    mu_f = f.mean(axis=0)
    mu = np.concatenate([r, f], axis=0).mean(axis=0)
    num = _intra(r, mu_r) + _intra(f, mu_f)
    den = 0.5 * (float(np.sum((mu_r - mu) ** 2)) + float(np.sum((mu_f - mu) ** 2)))
    if den == 0.0:
        return 0.0
    return float(np.clip(num / den / scale, 0.0, 1.0))


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
