"""LiRA's formulas (evaluation/audits/lira.py) against scipy and sklearn on hand-built data."""
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from evaluation.audits.lira import (SD_FLOOR, binomial_range, gaussian_fit, lira_scores, log_likelihood_ratio,
                                    logit_confidence, mean_range, pvalue_gauss, pvalue_t, roc_summary,
                                    shadow_rejection_rates, tpr_at_fpr)


def test_logit_confidence_is_log_odds_of_the_true_class():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 5))
    y = rng.integers(0, 5, 7)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    py = p[np.arange(7), y]
    np.testing.assert_allclose(logit_confidence(z, y), np.log(py / (1 - py)), rtol=1e-10)
    # leading model dimension
    zz = np.stack([z, 2 * z])
    np.testing.assert_allclose(logit_confidence(zz, y)[1], logit_confidence(2 * z, y))


def test_logit_confidence_is_stable_where_p_rounds_to_one_or_zero():
    z = np.array([[1000.0, 0.0, 0.0], [-1000.0, 0.0, 0.0]])
    phi = logit_confidence(z, np.array([0, 0]))
    np.testing.assert_allclose(phi, [1000.0 - math.log(2), -1000.0 - math.log(2)])


def test_gaussian_fit_matches_numpy_on_the_masked_models():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(9, 4))
    m = rng.random((9, 4)) < 0.6
    m[:, 3] = False
    m[0, 3] = True  # one model only: no fit
    mu, sd, n = gaussian_fit(v, m)
    for i in range(3):
        np.testing.assert_allclose(mu[i], v[m[:, i], i].mean())
        np.testing.assert_allclose(sd[i], max(v[m[:, i], i].std(ddof=1), SD_FLOOR))
    assert n.tolist() == m.sum(0).tolist() and math.isnan(mu[3]) and math.isnan(sd[3])


def test_pvalues_against_scipy_norm_and_t():
    obs = np.array([-1.0, 0.5, 3.0, 7.0])
    mu, sd = np.full(4, 1.0), np.full(4, 2.0)
    np.testing.assert_allclose(pvalue_gauss(obs, mu, sd), stats.norm.sf(obs, loc=1.0, scale=2.0))
    n = np.array([3, 5, 10, 10])
    want = stats.t.sf((obs - 1.0) / (2.0 * np.sqrt(1 + 1 / n)), n - 1)
    np.testing.assert_allclose(pvalue_t(obs, mu, sd, n), want)
    # many shadows: the t p-value tends to the Gaussian one
    np.testing.assert_allclose(pvalue_t(obs, mu, sd, np.full(4, 10 ** 6)), pvalue_gauss(obs, mu, sd), rtol=1e-4)


def test_lira_scores_on_hand_built_gaussians():
    rng = np.random.default_rng(2)
    K, n = 40, 6
    inside = np.zeros((K, n), bool)
    inside[::2] = True  # even shadows IN, odd OUT
    phi = np.where(inside, rng.normal(3.0, 0.5, (K, n)), rng.normal(0.0, 1.0, (K, n)))
    obs = np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0])
    r = lira_scores(obs, phi, inside, test="gauss")
    mo, so = phi[1::2].mean(0), phi[1::2].std(0, ddof=1)
    mi, si = phi[::2].mean(0), phi[::2].std(0, ddof=1)
    np.testing.assert_allclose(r["p"], stats.norm.sf(obs, mo, so), rtol=1e-9)
    np.testing.assert_allclose(r["score"], -stats.norm.logsf(obs, mo, so), rtol=1e-9)
    np.testing.assert_allclose(r["log_lr"], stats.norm.logpdf(obs, mi, si) - stats.norm.logpdf(obs, mo, so))
    np.testing.assert_allclose(log_likelihood_ratio(obs, mi, si, mo, so), r["log_lr"])
    assert r["n_out"].tolist() == [20] * n and r["n_in"].tolist() == [20] * n
    rt = lira_scores(obs, phi, inside, test="t")
    np.testing.assert_allclose(rt["p"], stats.t.sf((obs - mo) / (so * math.sqrt(1 + 1 / 20)), 19), rtol=1e-9)
    # no OUT models for an example: no p-value; no IN models: no likelihood ratio
    r2 = lira_scores(obs[:2], phi[:, :2], np.stack([np.ones(K, bool), np.zeros(K, bool)], 1))
    assert math.isnan(r2["p"][0]) and not math.isnan(r2["p"][1]) and math.isnan(r2["log_lr"][1])


def test_t_test_is_calibrated_with_few_shadows_and_the_gaussian_is_not():
    """Under H0 (target and OUT shadows from one Gaussian per example) the t p-value is uniform
    whatever the shadow count; the plain Gaussian rejects too often with 4 OUT shadows."""
    rng = np.random.default_rng(3)
    n, K = 20000, 4
    mu, sd = rng.normal(0, 3, n), rng.uniform(0.5, 2, n)
    shadows = rng.normal(mu, sd, (K, n))
    obs = rng.normal(mu, sd)
    lo, hi = binomial_range(n, 0.05, 0.999)
    rej_t = np.mean(lira_scores(obs, shadows, np.zeros((K, n), bool), test="t")["p"] < 0.05)
    rej_g = np.mean(lira_scores(obs, shadows, np.zeros((K, n), bool), test="gauss")["p"] < 0.05)
    assert lo <= rej_t <= hi
    assert rej_g > hi + 0.02


def test_roc_summary_against_sklearn():
    rng = np.random.default_rng(4)
    pos, neg = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 2000)
    s = roc_summary(np.r_[pos, np.nan], neg)
    y, sc = np.r_[np.ones(300), np.zeros(2000)], np.r_[pos, neg]
    assert s["auc"] == pytest.approx(roc_auc_score(y, sc))
    fpr, tpr, thr = roc_curve(y, sc)
    for f, key in ((0.001, "tpr@0.1%"), (0.01, "tpr@1%")):
        # by hand: the threshold that lets through at most f * 2000 non-members
        k = int(math.floor(f * len(neg) + 1e-9))
        t = np.sort(neg)[::-1][k] if k < len(neg) else -np.inf  # scores strictly above the (k+1)-th largest
        assert s[key] == pytest.approx(np.mean(pos > t))
        assert s[key] == pytest.approx(tpr[fpr <= f].max())


def test_tpr_at_fpr_reads_the_best_point_at_or_below_the_target():
    fpr = np.array([0.0, 0.0, 0.005, 0.02, 1.0])
    tpr = np.array([0.0, 0.1, 0.3, 0.6, 1.0])
    assert tpr_at_fpr(fpr, tpr, 0.001) == 0.1
    assert tpr_at_fpr(fpr, tpr, 0.01) == 0.3
    assert tpr_at_fpr(fpr, tpr, 0.5) == 0.6


def test_binomial_range():
    lo, hi = binomial_range(200, 0.05)
    a, b = stats.binom.interval(0.95, 200, 0.05)
    assert (lo, hi) == (a / 200, b / 200)
    assert all(math.isnan(v) for v in binomial_range(0, 0.05))


def test_shadow_rejection_rates_by_hand():
    """4 shadows, 2 examples: shadow 0 is OUT on both; against the other OUT shadows of each
    example (t test) it rejects where its phi is far above theirs."""
    phi = np.array([[9.0, 0.1],
                    [0.0, 0.0],
                    [1.0, 0.3],
                    [2.0, 0.2]])
    inside = np.array([[False, False], [False, False], [False, True], [False, False]])
    rates = shadow_rejection_rates(phi, inside, level=0.05, test="t")
    # shadow 0, example 0: others OUT = shadows 1, 2, 3 -> phi 0, 1, 2; example 1: shadows 1, 3 -> 0, 0.2
    p00 = stats.t.sf((9.0 - 1.0) / (1.0 * math.sqrt(1 + 1 / 3)), 2)
    sd = np.std([0.0, 0.2], ddof=1)
    p01 = stats.t.sf((0.1 - 0.1) / (sd * math.sqrt(1 + 1 / 2)), 1)
    assert p00 < 0.05 < p01
    assert rates[0] == pytest.approx(0.5)
    # shadow 2 trained on example 1: only example 0 counts (others: 0, 2, 9 -> not rejected)
    p20 = stats.t.sf((1.0 - np.mean([9.0, 0.0, 2.0])) / (np.std([9.0, 0.0, 2.0], ddof=1) * math.sqrt(4 / 3)), 2)
    assert p20 > 0.05 and rates[2] == 0.0
    # min_out: with fewer other OUT models an example does not count; none left -> nan
    assert math.isnan(shadow_rejection_rates(phi, inside, level=0.05, min_out=4)[0])


def test_shadow_rejection_rates_are_calibrated_under_h0():
    rng = np.random.default_rng(5)
    K, n = 60, 200
    inside = rng.random((K, n)) < 0.5
    phi = np.where(inside, rng.normal(2.0, 1.0, (K, n)), rng.normal(0.0, 1.0, (K, n)))
    rates = shadow_rejection_rates(phi, inside, level=0.05)
    assert rates.shape == (K,) and abs(np.mean(rates) - 0.05) < 0.01


def test_mean_range():
    r = np.array([0.0, 0.1, 0.2, np.nan])
    lo, hi = mean_range(r, 2, confidence=0.999)
    assert (lo, hi) == pytest.approx((0.05, 0.15))  # the means of 2 of 3 distinct: 0.05, 0.1, 0.15
    assert mean_range(r, 3) == pytest.approx((0.1, 0.1)) and mean_range(r, 1, 0.95) == (0.0, 0.2)
    assert mean_range(r, 2) == mean_range(r, 2)  # seeded
    assert all(math.isnan(v) for v in mean_range(np.array([np.nan]), 2))
