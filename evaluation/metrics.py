"""Scalar evaluation metrics: accuracy, ToW, ToW-MIA, seed aggregation, collapse check.

All functions are pure: numpy arrays or plain numbers in, Python numbers out.

Sources
-------
* ToW ("tug-of-war"): Zhao et al., "What makes unlearning hard and what to do about it" (RUM,
  NeurIPS 2024), as computed by its ``surgical_plugins/analysis.py`` with absolute differences
  against a model retrained from scratch (rum-spec §5; DESIGN.md §7.2 and §8). The signed variant
  with hard-coded reference accuracies found in the sharp-unlearn release (upstream-spec §7.1) is
  deliberately not reproduced.
* ToW-MIA: RUM ``surgical_plugins/analysis_mia.py`` (rum-spec §5, upstream-spec §7.4).
* Seed aggregation: mean and a Student-t confidence interval, as RUM does with
  ``scipy.stats.t.interval`` (rum-spec §5, DESIGN.md §8).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["accuracy", "tow", "tow_mia", "mean_ci", "collapsed"]


def check_scores_labels(scores: np.ndarray, labels: np.ndarray, name: str,
                        what: str) -> tuple[np.ndarray, np.ndarray]:
    """``scores`` must be ``[N, C]`` and ``labels`` ``[N]``; a ValueError names ``name`` and
    ``what`` (``"logits"``, ``"probabilities"``) otherwise."""
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"{name}: {what} must be 2-D [N, C], got shape {scores.shape}")
    if labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"{name}: labels must be 1-D with {scores.shape[0]} entries, got shape {labels.shape}")
    return scores, labels


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy as a fraction in [0, 1].

    ``acc = (1/N) * sum_i 1[argmax_c logits[i, c] == labels[i]]`` (upstream-spec §7.1: RA, FA, VA,
    TA are top-1 accuracies; here as fractions rather than percent). Ties in the argmax go to the
    lowest class index (numpy's ``argmax``). Works equally on logits or probabilities.

    Args:
        logits: ``[N, C]`` scores.
        labels: ``[N]`` integer class labels.

    Returns:
        The accuracy, or ``nan`` when ``N == 0``.
    """
    logits, labels = check_scores_labels(np.asarray(logits), labels, "accuracy", "logits")
    if logits.shape[0] == 0:
        return math.nan
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def _fraction(d: Mapping[str, float], key: str, which: str) -> float:
    if key not in d:
        raise KeyError(f"{which} results lack the key {key!r} (have: {sorted(d)})")
    v = float(d[key])
    if math.isfinite(v) and not 0.0 <= v <= 1.0:
        raise ValueError(
            f"{which}[{key!r}] = {v} is not a fraction in [0, 1] (percentages must be divided by 100)"
        )
    return v


def tow(unlearned: Mapping[str, float], retrain: Mapping[str, float]) -> float:
    """Tug-of-war score of an unlearned model against the retrain-from-scratch reference.

    ``ToW = (1 - |FA_u - FA_r|) * (1 - |RA_u - RA_r|) * (1 - |TA_u - TA_r|)``

    with FA/RA/TA the forget/retain/test top-1 accuracies as fractions in [0, 1], ``u`` the
    unlearned and ``r`` the retrained model of the same forget set and seed. ToW lies in [0, 1];
    1 means indistinguishable from retraining on these three accuracies. This is RUM's definition
    (absolute differences; rum-spec §5, DESIGN.md §7.2 / §8), not the sharp-unlearn release's signed
    one with hard-coded constants (upstream-spec §7.1). The validation split is not used.

    Args:
        unlearned: mapping with keys ``"forget"``, ``"retain"``, ``"test"`` (fractions).
        retrain: the same keys for the retrained reference.

    Returns:
        ToW; ``nan`` if any accuracy is ``nan``.

    Raises:
        KeyError: a key is missing.
        ValueError: a finite value lies outside [0, 1] (e.g. a percentage).
    """
    out = 1.0
    for key in ("forget", "retain", "test"):
        out *= 1.0 - abs(_fraction(unlearned, key, "unlearned") - _fraction(retrain, key, "retrain"))
    return float(out)


def tow_mia(unlearned: Mapping[str, float], retrain: Mapping[str, float]) -> float:
    """ToW-MIA: ToW with the forget-accuracy term replaced by an MIA term.

    ``ToW-MIA = (1 - |MIA_u - MIA_r|) * (1 - |RA_u - RA_r|) * (1 - |TA_u - TA_r|)``

    where MIA is the confidence-feature SVC "MIA-efficacy" (fraction of the forget set predicted
    non-member, see :func:`evaluation.mia.svc_mia`), a fraction in [0, 1] (RUM
    ``surgical_plugins/analysis_mia.py``; rum-spec §5, upstream-spec §7.4, DESIGN.md §8).

    Args:
        unlearned: mapping with keys ``"mia"``, ``"retain"``, ``"test"`` (fractions).
        retrain: the same keys for the retrained reference.

    Returns:
        ToW-MIA in [0, 1]; ``nan`` if any input is ``nan``.

    Raises:
        KeyError: a key is missing.
        ValueError: a finite value lies outside [0, 1].
    """
    out = 1.0
    for key in ("mia", "retain", "test"):
        out *= 1.0 - abs(_fraction(unlearned, key, "unlearned") - _fraction(retrain, key, "retrain"))
    return float(out)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """Mean over seeds and the half-width of a Student-t confidence interval.

    ``half = t_{(1+c)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
    (``ddof=1``) and ``t_{q, k}`` the q-quantile of Student's t with k degrees of freedom; this is
    the half-width of ``scipy.stats.t.interval(c, n-1, loc=mean, scale=sem)`` as used by RUM
    (rum-spec §5; upstream-spec §7.4: ``t_{0.975, n-1} * SEM`` for c = 0.95).

    Args:
        values: one value per seed (at least one).
        confidence: coverage ``c`` in (0, 1).

    Returns:
        ``(mean, half_width)``; ``half_width`` is ``None`` when ``n == 1`` (no spread estimate) and
        exactly ``0.0`` when all values are equal.
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError("mean_ci: no values to aggregate")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"mean_ci: confidence must lie in (0, 1), got {confidence}")
    mean = float(np.mean(arr))
    n = arr.size
    if n == 1:
        return mean, None
    if np.all(arr == arr[0]):
        return float(arr[0]), 0.0
    sem = float(np.std(arr, ddof=1)) / math.sqrt(n)
    t = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1))
    return mean, t * sem


def collapsed(retain_acc: float, num_classes: int, margin: float = 0.05) -> bool:
    """Whether a model has collapsed: retain accuracy at or below chance plus a margin.

    ``collapsed  <=>  retain_acc <= 1/C + margin`` with ``retain_acc`` a fraction in [0, 1] and
    ``C = num_classes``. A collapsed model "forgets" trivially, so its ToW is not meaningful.

    Args:
        retain_acc: retain-set accuracy as a fraction.
        num_classes: number of classes ``C`` (>= 1).
        margin: tolerance above chance level.
    """
    if num_classes < 1:
        raise ValueError(f"collapsed: num_classes must be >= 1, got {num_classes}")
    return bool(float(retain_acc) <= 1.0 / num_classes + margin)


def spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Spearman's rho of ``a`` and ``b`` over the positions where both are finite, and that count
    (rho is nan with fewer than 3 such positions or when either side is constant there)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return float("nan"), int(keep.sum())
    return float(stats.spearmanr(a[keep], b[keep])[0]), int(keep.sum())
