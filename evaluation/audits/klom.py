"""KLOM, the KL divergence of margins (Georgiev et al. 2024), as pure functions.

Source: Georgiev, Rinberg, Park, Garg, Ilyas, Madry, Neel, "Attribute-to-Delete: Machine
Unlearning via Datamodel Matching", 2024 (arXiv:2410.23232), Appendix E.1. An unlearning method
should give a model whose outputs are distributed like those of a model retrained without the
forget set. Over the randomness of training (here: the seeds), every example x has a
distribution of *margins* under the unlearned models and one under the retrained models; KLOM of
x is the KL divergence between the two, and the method is summarized by percentiles of KLOM over
forget, retain and validation examples (0 = indistinguishable).

Margin: ``m(x) = z_y - logsumexp_{j != y} z_j`` (the datamodels margin; equal to LiRA's
``phi``, :func:`evaluation.audits.lira.logit_confidence`).

Direction: ``KL(P_unlearned || P_retrain)`` (how surprising the unlearned margins are under the
retrain distribution), stated here because the two directions differ.

Two estimators, chosen by the caller and reported with the result:

* ``gauss`` (default): a 1-D Gaussian fitted to each side (mean, unbiased standard deviation
  raised to at least :data:`SD_FLOOR`), then the closed form
  ``KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2``.
  Needs at least 2 runs per side; with few seeds (3) it is the only usable one.
* ``hist``: histograms with :data:`HIST_BINS` equal-width bins spanning the pooled range of both
  samples (margins clipped to [-100, 100]), each bin's probability ``(count/N + eps)``
  renormalized with ``eps = 1e-5``, then ``sum_b P_b log(P_b / Q_b)``. This follows the
  binning of the public KLOM benchmark code (data-unlearning-bench); it needs tens of runs per
  side to mean anything.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["SD_FLOOR", "HIST_BINS", "HIST_EPS", "FITS", "kl_gauss", "kl_hist", "klom", "align_margins",
           "percentiles"]

SD_FLOOR = 1e-2
HIST_BINS = 20
HIST_EPS = 1e-5
CLIP = 100.0
FITS = ("gauss", "hist")


def kl_gauss(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """``KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1-m2)^2)/(2 s2^2) - 1/2``
    (elementwise; the closed form for univariate Gaussians)."""
    m1, s1, m2, s2 = (np.asarray(a, np.float64) for a in (m1, s1, m2, s2))
    return np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2.0 * s2 ** 2) - 0.5


def kl_hist(p_samples: np.ndarray, q_samples: np.ndarray, bins: int = HIST_BINS, eps: float = HIST_EPS) -> float:
    """``KL(P || Q)`` of two 1-D samples by shared-bin histograms (see the module docstring):
    ``bins`` equal-width bins over ``[min, max]`` of both samples pooled (clipped to
    ``[-100, 100]``), ``P_b = (c_b/N + eps) / sum_b'(c_b'/N + eps)``, ``KL = sum_b P_b log(P_b/Q_b)``."""
    p = np.clip(np.asarray(p_samples, np.float64), -CLIP, CLIP)
    q = np.clip(np.asarray(q_samples, np.float64), -CLIP, CLIP)
    lo, hi = min(p.min(), q.min()), max(p.max(), q.max())
    if hi <= lo:
        return 0.0
    edges = np.linspace(lo, hi, bins + 1)
    cp = np.histogram(p, edges)[0] / len(p) + eps
    cq = np.histogram(q, edges)[0] / len(q) + eps
    cp, cq = cp / cp.sum(), cq / cq.sum()
    return float(np.sum(cp * np.log(cp / cq)))


def klom(unlearned: np.ndarray, retrained: np.ndarray, fit: str = "gauss") -> np.ndarray:
    """Per-example KLOM ``KL(P_unlearned(x) || P_retrain(x))`` from margins.

    Args:
        unlearned: ``[N_u, n]`` margins of n examples under N_u unlearned models (seeds).
        retrained: ``[N_r, n]`` the same examples under N_r retrained models.
        fit: ``"gauss"`` or ``"hist"`` (module docstring).

    Returns:
        float64 ``[n]``.
    """
    u = np.asarray(unlearned, np.float64)
    r = np.asarray(retrained, np.float64)
    if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1]:
        raise ValueError(f"margins must be [N_u, n] and [N_r, n], got {u.shape} and {r.shape}")
    if fit == "gauss":
        if min(len(u), len(r)) < 2:
            raise ValueError(f"a Gaussian fit needs at least 2 runs per side, got {len(u)} and {len(r)}")
        su = np.maximum(u.std(0, ddof=1), SD_FLOOR)
        sr = np.maximum(r.std(0, ddof=1), SD_FLOOR)
        return kl_gauss(u.mean(0), su, r.mean(0), sr)
    if fit == "hist":
        if min(len(u), len(r)) < 1:
            raise ValueError("a histogram needs at least 1 run per side")
        return np.array([kl_hist(u[:, i], r[:, i]) for i in range(u.shape[1])])
    raise ValueError(f"fit must be one of {FITS}, got {fit!r}")


def align_margins(ids: Sequence[np.ndarray], margins: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-run margins on the ids every run has: ``(common ids sorted [n], [R, n])``."""
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0, 0))
    common = ids[0]
    for i in ids[1:]:
        common = np.intersect1d(common, i)
    common = np.unique(common).astype(np.int64)
    out = np.empty((len(ids), len(common)))
    for k, (i, m) in enumerate(zip(ids, margins)):
        i = np.asarray(i, np.int64)
        order = np.argsort(i, kind="stable")
        pos = order[np.searchsorted(i, common, sorter=order)]
        out[k] = np.asarray(m, np.float64)[pos]
    return common, out


def percentiles(values: np.ndarray, qs: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """``{"p50": ..., "p90": ..., "p99": ...}`` of the finite values (numpy's linear interpolation);
    nan when there are none."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return {f"p{q:g}": (float(np.percentile(v, q)) if v.size else math.nan) for q in qs}
