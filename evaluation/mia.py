"""SVC membership-inference attack, "MIA-efficacy" (SalUn-style).

Source: the ``evaluation/SVC_MIA.py`` attack of SalUn (Fan et al., ICLR 2024) as used by
sharp-unlearn and RUM (upstream-spec §7.2, rum-spec §5, DESIGN.md §8):

1. Shadow members = the first ``|test|`` retain examples (label 1); shadow non-members = the test
   set (label 0).
2. One attack per per-example feature (correctness, confidence, entropy, m_entropy, prob), each an
   RBF ``sklearn.svm.SVC(C=3, gamma="auto")`` trained on the shadow features.
3. Target = the forget set; the reported value is the fraction of targets predicted NON-member
   (higher = better forgetting; compare with the retrained model).

Deviations from the release, both decided in DESIGN.md §7.3 / this module's brief:

* ``m_entropy`` is Song & Mittal's modified entropy ("Systematic Evaluation of Privacy Risks of
  Machine Learning Models", USENIX Security 2021) with the per-example true label, not the
  release's label-set variant (upstream-spec §7.2 [SEMANTIC]).
* Shuffling uses ``np.random.RandomState(seed)``, never numpy's global RNG (the release's
  ``sklearn.utils.shuffle`` and ``SVC.fit`` both draw from it).
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.svm import SVC

from evaluation.metrics import check_scores_labels

__all__ = ["FEATURES", "mia_features", "svc_mia", "forget_mia_efficacy"]

FEATURES: tuple[str, ...] = ("correctness", "confidence", "entropy", "m_entropy", "prob")

_LOG_FLOOR = 1e-30


def _check(probs: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = check_scores_labels(np.asarray(probs, dtype=np.float64), labels, name, "probabilities")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(labels == np.round(labels)):
            raise ValueError(f"{name}: labels must be integers")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(
            f"{name}: labels must lie in [0, {probs.shape[1]}), got range "
            f"[{labels.min()}, {labels.max()}]"
        )
    return probs, labels


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, _LOG_FLOOR))


def mia_features(probs: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-example attack features from softmax probabilities.

    With ``p`` an example's probability vector and ``y`` its true label (upstream-spec §7.2):

    * ``correctness = 1[argmax_j p_j == y]``
    * ``confidence  = p_y``
    * ``entropy     = -sum_j p_j log p_j`` (terms with ``p_j <= 0`` count as 0, i.e. 0 log 0 = 0)
    * ``m_entropy   = -(1 - p_y) log p_y - sum_{j != y} p_j log(1 - p_j)`` (Song & Mittal 2021,
      eq. for Mentr; DESIGN.md §7.3), every log argument clipped below at 1e-30
    * ``prob        = p``

    Args:
        probs: ``[N, C]`` softmax probabilities.
        labels: ``[N]`` integer labels in ``[0, C)``.

    Returns:
        Dict with the five keys above; the scalar features have shape ``[N, 1]``, ``prob`` is
        ``[N, C]``; all float64.
    """
    probs, labels = _check(probs, labels, "mia_features")
    n = probs.shape[0]
    rows = np.arange(n)
    p_y = probs[rows, labels]
    correctness = (np.argmax(probs, axis=1) == labels).astype(np.float64) if n else np.zeros(0)
    pos = probs > 0
    entropy = -np.sum(np.where(pos, probs * np.log(np.where(pos, probs, 1.0)), 0.0), axis=1)
    # Song & Mittal: the true class contributes (1 - p_y) log p_y, the others p_j log(1 - p_j).
    others = probs * _log(1.0 - probs)
    others[rows, labels] = 0.0
    m_entropy = -(1.0 - p_y) * _log(p_y) - np.sum(others, axis=1)
    return {
        "correctness": correctness.reshape(n, 1),
        "confidence": p_y.reshape(n, 1).astype(np.float64),
        "entropy": entropy.reshape(n, 1),
        "m_entropy": m_entropy.reshape(n, 1),
        "prob": probs.copy(),
    }


def svc_mia(
    shadow_in_probs: np.ndarray,
    shadow_in_labels: np.ndarray,
    shadow_out_probs: np.ndarray,
    shadow_out_labels: np.ndarray,
    target_probs: np.ndarray,
    target_labels: np.ndarray,
    *,
    seed: int = 0,
    max_shadow: int | None = None,
) -> dict[str, float]:
    """SVC membership-inference attack; returns the fraction of targets predicted non-member.

    For each feature ``f`` of :func:`mia_features` (upstream-spec §7.2 steps 2-3):
    ``X = [f(shadow_in); f(shadow_out)]``, ``y = [1, ..., 1, 0, ..., 0]``, rows shuffled with
    ``np.random.RandomState(seed)``; fit ``SVC(C=3, gamma="auto", kernel="rbf")`` (its
    ``random_state`` also drawn from that local RNG); the result is
    ``mean_t 1[svc.predict(f(target_t)) == 0]``.

    Args:
        shadow_in_probs, shadow_in_labels: shadow members (``[N_in, C]``, ``[N_in]``).
        shadow_out_probs, shadow_out_labels: shadow non-members (``[N_out, C]``, ``[N_out]``).
        target_probs, target_labels: the examples attacked (``[N_t, C]``, ``[N_t]``).
        seed: seeds the local RNG for subsampling and shuffling (the global numpy RNG is never
            touched).
        max_shadow: speed knob. When set, each shadow side is subsampled (without replacement,
            deterministically from ``seed``) to at most this many examples before fitting: the
            RBF SVC's cost grows roughly quadratically with the shadow size, and the release uses
            10k + 10k. ``None`` (default) uses every shadow example, as the release does.

    Returns:
        ``{"correctness", "confidence", "entropy", "m_entropy", "prob"} -> fraction`` in [0, 1];
        every value is ``nan`` when the target set is empty.

    Raises:
        ValueError: either shadow set is empty, shapes disagree, or ``max_shadow < 1``.
    """
    s_in_p, s_in_y = _check(shadow_in_probs, shadow_in_labels, "svc_mia shadow_in")
    s_out_p, s_out_y = _check(shadow_out_probs, shadow_out_labels, "svc_mia shadow_out")
    t_p, t_y = _check(target_probs, target_labels, "svc_mia target")
    if s_in_p.shape[0] == 0 or s_out_p.shape[0] == 0:
        raise ValueError(
            "svc_mia: both shadow sets must be non-empty "
            f"(members: {s_in_p.shape[0]}, non-members: {s_out_p.shape[0]})"
        )
    c = s_in_p.shape[1]
    if s_out_p.shape[1] != c or t_p.shape[1] != c:
        raise ValueError(
            "svc_mia: all probability arrays need the same number of classes, got "
            f"{s_in_p.shape[1]}, {s_out_p.shape[1]}, {t_p.shape[1]}"
        )
    if t_p.shape[0] == 0:
        return {k: math.nan for k in FEATURES}
    if max_shadow is not None and max_shadow < 1:
        raise ValueError(f"svc_mia: max_shadow must be >= 1 or None, got {max_shadow}")

    rng = np.random.RandomState(seed)
    if max_shadow is not None:
        if s_in_p.shape[0] > max_shadow:
            keep = np.sort(rng.choice(s_in_p.shape[0], max_shadow, replace=False))
            s_in_p, s_in_y = s_in_p[keep], s_in_y[keep]
        if s_out_p.shape[0] > max_shadow:
            keep = np.sort(rng.choice(s_out_p.shape[0], max_shadow, replace=False))
            s_out_p, s_out_y = s_out_p[keep], s_out_y[keep]

    f_in = mia_features(s_in_p, s_in_y)
    f_out = mia_features(s_out_p, s_out_y)
    f_t = mia_features(t_p, t_y)
    y = np.concatenate([np.ones(s_in_p.shape[0], np.int64), np.zeros(s_out_p.shape[0], np.int64)])
    order = rng.permutation(y.shape[0])
    svc_seed = int(rng.randint(np.iinfo(np.int32).max))
    y = y[order]

    out: dict[str, float] = {}
    for key in FEATURES:
        x = np.concatenate([f_in[key], f_out[key]], axis=0)[order]
        # libsvm draws a seed from ``random_state`` at every fit (the global RNG when None), so a
        # fixed integer keeps the global numpy state untouched and the fit reproducible.
        clf = SVC(C=3, gamma="auto", kernel="rbf", random_state=svc_seed)
        clf.fit(x, y)
        pred = clf.predict(f_t[key])
        out[key] = float(np.mean(pred == 0))
    return out


def forget_mia_efficacy(
    retain_probs: np.ndarray,
    retain_labels: np.ndarray,
    test_probs: np.ndarray,
    test_labels: np.ndarray,
    forget_probs: np.ndarray,
    forget_labels: np.ndarray,
    seed: int = 0,
    *,
    max_shadow: int | None = None,
) -> dict[str, float]:
    """MIA-efficacy of the forget set, with the evaluation protocol's shadow sets.

    Shadow members = the first ``len(test)`` retain examples in index order, shadow non-members =
    the test set, target = the forget set (DESIGN.md §8, upstream-spec §7.2); see :func:`svc_mia`.
    ToW-MIA uses the ``"confidence"`` entry.
    """
    retain_probs = np.asarray(retain_probs)
    retain_labels = np.asarray(retain_labels)
    n_test = int(np.asarray(test_labels).shape[0])
    return svc_mia(
        retain_probs[:n_test],
        retain_labels[:n_test],
        test_probs,
        test_labels,
        forget_probs,
        forget_labels,
        seed=seed,
        max_shadow=max_shadow,
    )
