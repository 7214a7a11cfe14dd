import math

import numpy as np
import pytest
from scipy import stats

from evaluation.metrics import accuracy, collapsed, mean_ci, tow, tow_mia


def test_accuracy_hand():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [0.0, 1.0, 0.0]])
    labels = np.array([0, 1, 0, 2])
    # predictions 0, 1, 2, 1 -> correct, correct, wrong, wrong
    assert accuracy(logits, labels) == 0.5


def test_accuracy_empty_is_nan():
    assert math.isnan(accuracy(np.zeros((0, 10)), np.zeros(0, dtype=int)))


def test_accuracy_shape_mismatch():
    with pytest.raises(ValueError):
        accuracy(np.zeros((3, 2)), np.zeros(2, dtype=int))


def test_tow_hand():
    u = {"forget": 0.90, "retain": 0.98, "test": 0.75}
    r = {"forget": 0.80, "retain": 1.00, "test": 0.70}
    # (1 - 0.10) * (1 - 0.02) * (1 - 0.05) = 0.90 * 0.98 * 0.95 = 0.8379
    assert tow(u, r) == pytest.approx(0.8379, abs=1e-12)
    # absolute differences: swapping the roles gives the same value
    assert tow(r, u) == pytest.approx(0.8379, abs=1e-12)
    assert tow(r, r) == 1.0


def test_tow_mia_hand():
    u = {"mia": 0.30, "forget": 0.0, "retain": 0.98, "test": 0.75}
    r = {"mia": 0.55, "forget": 1.0, "retain": 1.00, "test": 0.70}
    # (1 - 0.25) * (1 - 0.02) * (1 - 0.05) = 0.75 * 0.98 * 0.95 = 0.69825 (forget acc unused)
    assert tow_mia(u, r) == pytest.approx(0.69825, abs=1e-12)


def test_tow_rejects_percent_and_missing():
    with pytest.raises(ValueError):
        tow({"forget": 90.0, "retain": 0.9, "test": 0.9}, {"forget": 0.9, "retain": 0.9, "test": 0.9})
    with pytest.raises(KeyError):
        tow_mia({"retain": 0.9, "test": 0.9}, {"mia": 0.1, "retain": 0.9, "test": 0.9})


def test_tow_nan_propagates():
    u = {"forget": math.nan, "retain": 0.9, "test": 0.9}
    assert math.isnan(tow(u, {"forget": 0.5, "retain": 0.9, "test": 0.9}))


def test_mean_ci_against_scipy():
    vals = [0.8, 0.85, 0.9]
    m, h = mean_ci(vals)
    # std(ddof=1) = 0.05, SEM = 0.05/sqrt(3), t_{0.975,2} = 4.302653 -> 0.1242069
    assert m == pytest.approx(0.85)
    assert h == pytest.approx(0.1242069, abs=1e-7)
    lo, hi = stats.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=stats.sem(vals))
    assert h == pytest.approx((hi - lo) / 2, rel=1e-12)
    vals = [0.1, 0.4, 0.35, 0.2, 0.9]
    m, h = mean_ci(vals, confidence=0.9)
    lo, hi = stats.t.interval(0.9, len(vals) - 1, loc=np.mean(vals), scale=stats.sem(vals))
    assert m == pytest.approx(np.mean(vals))
    assert h == pytest.approx((hi - lo) / 2, rel=1e-12)


def test_mean_ci_edge_cases():
    assert mean_ci([0.7]) == (0.7, None)
    assert mean_ci([0.1, 0.1, 0.1]) == (0.1, 0.0)
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError):
        mean_ci([0.1, 0.2], confidence=1.0)


def test_collapsed():
    assert collapsed(0.14, 10)  # chance 0.1 + 0.05 margin = 0.15
    assert collapsed(0.15, 10)
    assert not collapsed(0.16, 10)
    assert not collapsed(0.5, 100)
    assert collapsed(0.02, 100, margin=0.01)


def test_spearman():
    from evaluation.metrics import spearman

    s = np.linspace(-0.1, 0.9, 10)
    rho, n = spearman(s, -s ** 3)
    assert np.isclose(rho, -1.0) and n == 10
    rho, n = spearman(np.r_[s, np.nan], np.r_[s, 1.0])
    assert np.isclose(rho, 1.0) and n == 10
    assert np.isnan(spearman(np.ones(5), np.arange(5))[0])
