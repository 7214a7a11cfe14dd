"""Entanglement score (ES) between retain and forget embeddings, (the ES forget sets are :func:`forget_sets.select.es_forget_ids`).

Sources
-------
* ES: Zhao et al., "What makes unlearning hard and what to do about it" (RUM, NeurIPS 2024),
  ``surgical_plugins/overlap.py::calculate_FC`` (rum-spec §4): intra-set variance over inter-set
  variance, with the retain and forget sets as the two "classes".
* Normalized ES: the sharp-unlearn release's ``analysis.py::compute_variance_entanglement``
  (upstream-spec §7.5).
"""
from __future__ import annotations

import math

import numpy as np


__all__ = [
    "entanglement_score",
    "entanglement_score_normalized",
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
