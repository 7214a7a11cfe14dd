import math

import numpy as np
import pytest

from evaluation.mia import FEATURES, forget_mia_efficacy, mia_features, svc_mia


def test_features_hand_3class():
    p = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])
    y = np.array([0, 1])
    f = mia_features(p, y)
    assert f["correctness"].ravel().tolist() == [1.0, 0.0]
    assert f["confidence"].ravel() == pytest.approx([0.7, 0.2])
    # -(.7 ln .7 + .2 ln .2 + .1 ln .1) = 0.2496725 + 0.3218876 + 0.2302585 = 0.8018186
    assert f["entropy"].ravel() == pytest.approx([0.8018186, 0.8018186], abs=1e-7)
    # y=0: -(0.3) ln 0.7 - (0.2 ln 0.8 + 0.1 ln 0.9) = 0.1070025 + 0.0446287 + 0.0105361
    # y=1: -(0.8) ln 0.2 - (0.7 ln 0.3 + 0.1 ln 0.9) = 1.2875503 + 0.8427810 + 0.0105361
    assert f["m_entropy"].ravel() == pytest.approx([0.1621673, 2.1408674], abs=1e-6)
    assert f["prob"].shape == (2, 3)
    for k in ("correctness", "confidence", "entropy", "m_entropy"):
        assert f[k].shape == (2, 1)


def test_features_zero_probabilities():
    p = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    f = mia_features(p, np.array([0, 1]))
    assert f["entropy"].ravel().tolist() == [0.0, 0.0]  # 0 log 0 = 0
    # y=0: -(0) log 1 - (0 + 0) = 0
    # y=1: -(1) log(max(0, 1e-30)) - 1 * log(max(1 - 1, 1e-30)) = 2 * 30 ln 10
    assert f["m_entropy"].ravel() == pytest.approx([0.0, 2 * 30 * math.log(10)])


def _probs(rng, n, conf_lo, conf_hi, c=3):
    y = rng.randint(0, c, size=n)
    conf = rng.uniform(conf_lo, conf_hi, size=n)
    p = np.repeat(((1 - conf) / (c - 1))[:, None], c, axis=1)
    p[np.arange(n), y] = conf
    return p, y


def _sets():
    rng = np.random.RandomState(123)
    m = _probs(rng, 150, 0.97, 0.999)  # members: confident and correct
    nm = _probs(rng, 150, 0.25, 0.32)  # non-members: unconfident and wrong
    t_nm = _probs(rng, 60, 0.25, 0.32)
    t_m = _probs(rng, 60, 0.97, 0.999)
    return m, nm, t_nm, t_m


def test_svc_mia_known_answer_and_global_rng():
    m, nm, t_nm, t_m = _sets()
    state = np.random.get_state()
    like_non = svc_mia(*m, *nm, *t_nm, seed=0)
    like_mem = svc_mia(*m, *nm, *t_m, seed=0)
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]
    assert set(like_non) == set(FEATURES)
    for k in FEATURES:
        assert like_non[k] >= 0.95, k
        assert like_mem[k] <= 0.05, k
    assert svc_mia(*m, *nm, *t_nm, seed=0) == like_non  # deterministic


def test_svc_mia_max_shadow_and_edges():
    m, nm, t_nm, _ = _sets()
    out = svc_mia(*m, *nm, *t_nm, seed=1, max_shadow=40)
    assert all(v >= 0.95 for v in out.values())
    empty = svc_mia(*m, *nm, np.zeros((0, 3)), np.zeros(0, dtype=int))
    assert all(math.isnan(v) for v in empty.values())
    with pytest.raises(ValueError):
        svc_mia(np.zeros((0, 3)), np.zeros(0, dtype=int), *nm, *t_nm)
    with pytest.raises(ValueError):
        svc_mia(*m, np.zeros((0, 3)), np.zeros(0, dtype=int), *t_nm)


def test_forget_mia_efficacy_uses_first_test_size_retain():
    rng = np.random.RandomState(7)
    mem_p, mem_y = _probs(rng, 100, 0.97, 0.999)
    tail_p, tail_y = _probs(rng, 100, 0.25, 0.32)  # would blur the attack if used as members
    retain_p = np.concatenate([mem_p, tail_p])
    retain_y = np.concatenate([mem_y, tail_y])
    test_p, test_y = _probs(rng, 100, 0.25, 0.32)
    forget_p, forget_y = _probs(rng, 50, 0.25, 0.32)
    out = forget_mia_efficacy(retain_p, retain_y, test_p, test_y, forget_p, forget_y, seed=0)
    assert out["confidence"] >= 0.95
    forget_p, forget_y = _probs(rng, 50, 0.97, 0.999)
    out = forget_mia_efficacy(retain_p, retain_y, test_p, test_y, forget_p, forget_y, seed=0)
    assert out["confidence"] <= 0.05
