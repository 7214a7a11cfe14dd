"""KLOM (evaluation/audits/klom.py) against hand computations."""
import math

import numpy as np
import pytest

from evaluation.audits.klom import SD_FLOOR, align_margins, kl_gauss, kl_hist, klom, percentiles


def test_kl_gauss_closed_form_by_hand():
    # KL(N(1, 2^2) || N(0, 1)) = log(1/2) + (4 + 1)/2 - 1/2 = 2 - log 2
    assert kl_gauss(1.0, 2.0, 0.0, 1.0) == pytest.approx(2.0 - math.log(2.0))
    # KL(N(0, 1) || N(3, 2^2)) = log 2 + (1 + 9)/8 - 1/2
    assert kl_gauss(0.0, 1.0, 3.0, 2.0) == pytest.approx(math.log(2.0) + 10 / 8 - 0.5)
    assert kl_gauss(0.7, 1.3, 0.7, 1.3) == pytest.approx(0.0)


def test_klom_gauss_fits_each_side_then_uses_the_closed_form():
    u = np.array([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]])  # second example: no spread -> SD_FLOOR
    r = np.array([[0.0, 4.0], [1.0, 6.0], [-1.0, 5.0], [0.5, 5.0]])
    k = klom(u, r, "gauss")
    m1, s1 = u[:, 0].mean(), u[:, 0].std(ddof=1)
    m2, s2 = r[:, 0].mean(), r[:, 0].std(ddof=1)
    want0 = math.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5
    assert k[0] == pytest.approx(want0)
    s2b = r[:, 1].std(ddof=1)
    assert k[1] == pytest.approx(math.log(s2b / SD_FLOOR) + (SD_FLOOR ** 2 + (5 - r[:, 1].mean()) ** 2) / (2 * s2b ** 2)
                                 - 0.5)
    with pytest.raises(ValueError):
        klom(u[:1], r, "gauss")


def test_kl_hist_by_hand():
    assert kl_hist(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == pytest.approx(0.0, abs=1e-12)
    # two bins over [0, 1]: P = (1, 0) + eps, Q = (1/2, 1/2) + eps, renormalized
    eps = 1e-5
    p = np.array([1 + eps, eps]) / (1 + 2 * eps)
    q = np.array([0.5 + eps, 0.5 + eps]) / (1 + 2 * eps)
    want = float(np.sum(p * np.log(p / q)))
    assert kl_hist(np.array([0.0, 0.2]), np.array([0.0, 1.0]), bins=2) == pytest.approx(want)
    k = klom(np.array([[0.0], [0.2]]), np.array([[0.0], [1.0]]), "hist")
    assert k.shape == (1,) and k[0] == pytest.approx(kl_hist(np.array([0.0, 0.2]), np.array([0.0, 1.0])))


def test_align_margins_and_percentiles():
    ids, m = align_margins([np.array([3, 1, 2]), np.array([2, 3, 9])], [np.array([30., 10., 20.]),
                                                                        np.array([2., 3., 9.])])
    assert ids.tolist() == [2, 3] and m.tolist() == [[20., 30.], [2., 3.]]
    p = percentiles(np.r_[np.arange(101.0), np.nan])
    assert p == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert math.isnan(percentiles(np.array([np.nan]))["p50"])
