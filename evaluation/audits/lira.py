"""The likelihood-ratio membership attack (LiRA) against an unlearned model, as pure functions.

Sources
-------
* LiRA: Carlini, Chien, Nasr, Song, Terzis, Tramer, "Membership Inference Attacks From First
  Principles", IEEE S&P 2022 (arXiv:2112.03570): the logit-scaled confidence
  ``phi = log(p_y / (1 - p_y))`` (§IV-B), per-example Gaussians of ``phi`` over shadow models
  that did (IN) and did not (OUT) train on the example, the online likelihood ratio and the
  offline one-sided test (§IV-C/D), and the evaluation by TPR at a low FPR (§III).
* U-LiRA: Hayes, Shumailov, Triantafillou, Khalifa, Papernot, "Inexact Unlearning Needs More
  Careful Evaluations to Avoid a False Sense of Privacy", 2024 (arXiv:2403.01218): LiRA with the
  unlearned model as the target and models never trained on the forget example as the null.

The test asked here: H0 = "the model never saw example x" (x is OUT). Under H0 the target's
``phi`` is a draw from the OUT distribution, so the p-value ``P_OUT(phi >= observed)`` is uniform
and a model that forgot x exactly (a retrain) rejects H0 for a fraction ``level`` of its forget
examples. A higher rejection rate means the model still shows x's influence.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats
from scipy.special import logsumexp

__all__ = ["SD_FLOOR", "logit_confidence", "gaussian_fit", "pvalue_gauss", "pvalue_t", "log_likelihood_ratio",
           "lira_scores", "roc_summary", "tpr_at_fpr", "binomial_range", "shadow_rejection_rates", "mean_range"]

SD_FLOOR = 1e-3  # a standard deviation below this (shadows that agree to 1e-3 in phi) is raised to it


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's statistic of every example: ``phi = log(p_y / (1 - p_y))`` under softmax.

    Computed stably from the logits ``z`` (Carlini et al. 2022, §IV-B and their reference code):
    ``p_y / (1 - p_y) = exp(z_y) / sum_{j != y} exp(z_j)``, so

        phi = z_y - logsumexp_{j != y} z_j,

    which never forms ``p_y`` (no ``log(0)`` or ``1 - 1`` at confident examples). The same
    quantity is the "margin" of datamodels and KLOM (:mod:`evaluation.audits.klom`).

    Args:
        logits: ``[..., n, C]`` float logits (C >= 2), any leading dimensions (e.g. models).
        labels: ``[n]`` integer labels.

    Returns:
        float64 ``[..., n]``.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim < 2 or z.shape[-1] < 2:
        raise ValueError(f"logits must be [..., n, C] with C >= 2, got shape {z.shape}")
    if y.shape != z.shape[-2:-1]:
        raise ValueError(f"labels must be [n] = {z.shape[-2:-1]}, got shape {y.shape}")
    onehot = np.zeros(z.shape[-2:], dtype=bool)
    onehot[np.arange(len(y)), y] = True
    zy = np.take_along_axis(z, np.broadcast_to(y[:, None], z.shape[:-1] + (1,)), axis=-1)[..., 0]
    others = np.where(onehot, -np.inf, z)
    return zy - logsumexp(others, axis=-1)


def gaussian_fit(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-example mean, standard deviation and count of ``values[k, i]`` over the models k with
    ``mask[k, i]``: ``mu_i = mean_k phi``, ``sd_i = sqrt(sum_k (phi - mu_i)^2 / (n_i - 1))``
    (the unbiased variance; ``ddof=1``), raised to at least :data:`SD_FLOOR`. Examples with fewer
    than two models get ``nan`` mean and deviation.

    Args:
        values: ``[K, n]`` statistics of K shadow models.
        mask: ``[K, n]`` bool, which (model, example) pairs to use.

    Returns:
        ``(mu [n], sd [n], count [n])``.
    """
    v = np.asarray(values, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if v.shape != m.shape or v.ndim != 2:
        raise ValueError(f"values and mask must both be [K, n], got {v.shape} and {m.shape}")
    n = m.sum(0)
    s = np.where(m, v, 0.0).sum(0)
    mu = np.divide(s, n, out=np.full(v.shape[1], np.nan), where=n > 0)
    sq = np.where(m, (v - np.nan_to_num(mu)[None]) ** 2, 0.0).sum(0)
    var = np.divide(sq, n - 1, out=np.full(v.shape[1], np.nan), where=n > 1)
    sd = np.maximum(np.sqrt(var), SD_FLOOR)
    mu = np.where(n > 1, mu, np.nan)
    return mu, np.where(n > 1, sd, np.nan), n.astype(np.int64)


def pvalue_gauss(obs: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """One-sided p-value of the offline LiRA test: ``p = P_{N(mu, sd^2)}(phi >= obs) =
    1 - Phi((obs - mu) / sd)`` (Carlini et al. 2022, §IV-D, offline attack), with ``Phi`` the
    standard normal CDF (``scipy.stats.norm.sf``)."""
    return stats.norm.sf((np.asarray(obs, np.float64) - mu) / sd)


def pvalue_t(obs: np.ndarray, mu: np.ndarray, sd: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The same one-sided p-value with the small-sample correction: when ``mu`` and ``sd`` are
    estimated from ``n`` OUT models (``ddof=1``), a fresh OUT draw satisfies
    ``(phi - mu) / (sd * sqrt(1 + 1/n)) ~ t_{n-1}`` under the Gaussian assumption (the prediction
    interval of a normal sample), so

        p = 1 - F_{t, n-1}((obs - mu) / (sd * sqrt(1 + 1/n))),

    exactly uniform under H0 for Gaussian ``phi`` whatever ``n``; it tends to :func:`pvalue_gauss`
    as ``n`` grows. (This correction is this project's; Carlini et al. use the plain Gaussian with
    many shadow models, or a variance shared by all examples with few.)"""
    n = np.asarray(n, dtype=np.float64)
    df = np.where(n > 1, n - 1, np.nan)
    return stats.t.sf((np.asarray(obs, np.float64) - mu) / (sd * np.sqrt(1.0 + 1.0 / n)), df)


def log_likelihood_ratio(obs: np.ndarray, mu_in: np.ndarray, sd_in: np.ndarray, mu_out: np.ndarray,
                         sd_out: np.ndarray) -> np.ndarray:
    """The online (two-sided) LiRA statistic, as a natural log:

        log LR = log N(obs; mu_in, sd_in^2) - log N(obs; mu_out, sd_out^2)

    (Carlini et al. 2022, §IV-C, Algorithm 1). Positive: the observation is likelier under the
    models that trained on x than under those that did not."""
    obs = np.asarray(obs, np.float64)
    return stats.norm.logpdf(obs, mu_in, sd_in) - stats.norm.logpdf(obs, mu_out, sd_out)


def lira_scores(target_phi: np.ndarray, shadow_phi: np.ndarray, shadow_in: np.ndarray, *,
                test: str = "t") -> dict[str, np.ndarray]:
    """Per-example LiRA results of one target model.

    Args:
        target_phi: ``[n]`` the target's :func:`logit_confidence` on n examples.
        shadow_phi: ``[K, n]`` the shadow models' on the same examples.
        shadow_in: ``[K, n]`` bool, whether shadow k trained on example i.
        test: ``"t"`` (:func:`pvalue_t`, default) or ``"gauss"`` (:func:`pvalue_gauss`).

    Returns:
        ``p`` (one-sided p-value of H0 "never seen"; nan with fewer than 2 OUT models), ``score``
        (``-log p``: higher = more member-like; the ROC score), ``log_lr`` (nan with fewer than 2
        IN or OUT models), ``n_in``, ``n_out``.
    """
    if test not in ("t", "gauss"):
        raise ValueError(f"test must be 't' or 'gauss', got {test!r}")
    shadow_in = np.asarray(shadow_in, dtype=bool)
    mu_o, sd_o, n_o = gaussian_fit(shadow_phi, ~shadow_in)
    mu_i, sd_i, n_i = gaussian_fit(shadow_phi, shadow_in)
    obs = np.asarray(target_phi, np.float64)
    if obs.shape != mu_o.shape:
        raise ValueError(f"target_phi must be [{mu_o.shape[0]}], got shape {obs.shape}")
    if test == "t":
        z = (obs - mu_o) / (sd_o * np.sqrt(1.0 + 1.0 / np.maximum(n_o, 1)))
        logp = stats.t.logsf(z, np.where(n_o > 1, n_o - 1, np.nan))
    else:
        logp = stats.norm.logsf((obs - mu_o) / sd_o)
    return {"p": np.exp(logp), "score": -logp, "log_lr": log_likelihood_ratio(obs, mu_i, sd_i, mu_o, sd_o),
            "n_in": n_i, "n_out": n_o}


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest true-positive rate of a ROC curve (``sklearn.metrics.roc_curve``'s ``fpr``,
    ``tpr``) among its thresholds with false-positive rate at most ``target`` (Carlini et al.
    2022, §III: "TPR at low FPR"). With m non-members the FPR moves in steps of 1/m, so a target
    below 1/m reads the TPR at FPR 0."""
    ok = np.asarray(fpr) <= target + 1e-12
    return float(np.max(np.asarray(tpr)[ok])) if ok.any() else 0.0


def roc_summary(member_scores: np.ndarray, nonmember_scores: np.ndarray,
                fprs: tuple[float, ...] = (0.001, 0.01)) -> dict[str, float]:
    """AUC and TPR at the given FPRs of the scores of members (positives) against non-members
    (negatives), higher score = member; ``nan`` scores are dropped. ``auc`` equals
    ``sklearn.metrics.roc_auc_score``; keys ``tpr@0.1%`` and ``tpr@1%`` for the default ``fprs``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    pos = np.asarray(member_scores, np.float64)
    neg = np.asarray(nonmember_scores, np.float64)
    pos, neg = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
    out = {"auc": math.nan, **{f"tpr@{100 * f:g}%": math.nan for f in fprs}}
    if len(pos) == 0 or len(neg) == 0:
        return out
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    s = np.nan_to_num(np.r_[pos, neg], posinf=np.finfo(np.float64).max)
    fpr, tpr, _ = roc_curve(y, s)
    out["auc"] = float(roc_auc_score(y, s))
    for f in fprs:
        out[f"tpr@{100 * f:g}%"] = tpr_at_fpr(fpr, tpr, f)
    return out


def binomial_range(n: int, level: float, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` range of the rejection *fraction* of a calibrated test at
    ``level`` over ``n`` independent examples: ``binom.interval(confidence, n, level) / n``."""
    if n <= 0:
        return math.nan, math.nan
    lo, hi = stats.binom.interval(confidence, int(n), float(level))
    return float(lo) / n, float(hi) / n


def shadow_rejection_rates(shadow_phi: np.ndarray, shadow_in: np.ndarray, *, level: float, test: str = "t",
                           min_out: int = 2) -> np.ndarray:
    """Leave-one-out calibration: each shadow k in turn is the target, tested on the examples it
    did not train on against the *other* OUT shadows; its rejection rate
    ``r_k = #{i: k OUT on i, p_i < level} / #{i: k OUT on i, >= min_out other OUT models}``.

    A model trained like the shadows without x is what a retrain is under H0, so the spread of
    ``r_k`` is the spread of a retrain's rejection rate, *including* the model-level randomness
    that makes one model's forget examples reject together (which a binomial range over examples
    ignores). ``nan`` for a shadow with no such example.

    Args:
        shadow_phi, shadow_in: ``[K, n]`` as in :func:`lira_scores`.
        level: the test's level; test: ``"t"`` or ``"gauss"`` (as :func:`lira_scores`).

    Returns:
        ``[K]`` rejection rates.
    """
    phi = np.asarray(shadow_phi, np.float64)
    inn = np.asarray(shadow_in, bool)
    rates = np.full(len(phi), np.nan)
    for k in range(len(phi)):
        others = ~inn
        others[k] = False
        res = lira_scores(phi[k], phi, ~others, test=test)  # "IN" = everything that is not another OUT model
        use = ~inn[k] & (res["n_out"] >= min_out)
        if use.any():
            rates[k] = float(np.mean(res["p"][use] < level))
    return rates


def mean_range(rates: np.ndarray, m: int, confidence: float = 0.95, draws: int = 20000,
               seed: int = 0) -> tuple[float, float]:
    """The central ``confidence`` range of the mean of ``m`` values drawn without replacement
    from ``rates`` (nan dropped): the quantiles of ``draws`` such means (``default_rng(seed)``,
    so the same rates give the same range). ``m`` >= the number of values: their mean, twice."""
    r = np.asarray(rates, np.float64)
    r = r[~np.isnan(r)]
    if len(r) == 0 or m <= 0:
        return math.nan, math.nan
    if m >= len(r):
        return float(r.mean()), float(r.mean())
    picks = np.argsort(np.random.default_rng(seed).random((draws, len(r))), axis=1)[:, :m]  # m distinct per draw
    means = r[picks].mean(1)
    a = (1 - confidence) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))
