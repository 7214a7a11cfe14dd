import math

import numpy as np
import pytest

from forget_sets.select import centroid_distance_groups, es_forget_ids
from evaluation.entanglement import entanglement_score, entanglement_score_normalized
from utils.errors import UserError


def test_es_hand_equal_sizes():
    r = np.array([[0.0, 0.0], [2.0, 0.0]])
    f = np.array([[1.0, 4.0], [1.0, 6.0]])
    # mu_R = (1,0), intra_R = 1; mu_F = (1,5), intra_F = 1; mu = (1,2.5)
    # den = 0.5 * (6.25 + 6.25) = 6.25 -> ES = 2 / 6.25 = 0.32
    assert entanglement_score(r, f) == pytest.approx(0.32)


def test_es_hand_unweighted_centroid_mean():
    r = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    f = np.array([[1.0, 4.0], [1.0, 6.0]])
    # intra_R = (1 + 1 + 0)/3 = 2/3, intra_F = 1; mu = (mu_R + mu_F)/2 = (1, 2.5) (not the
    # sample-weighted (1, 2)); den = 6.25 -> ES = (5/3) / 6.25 = 0.266666...
    assert entanglement_score(r, f) == pytest.approx((5 / 3) / 6.25)


def test_es_float32_input_and_degenerate():
    r = np.array([[0.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    f = np.array([[1.0, 4.0], [1.0, 6.0]], dtype=np.float32)
    assert entanglement_score(r, f) == pytest.approx(0.32, rel=1e-12)
    same = np.array([[0.0, 1.0], [0.0, -1.0]])
    assert entanglement_score(same, same) == math.inf
    pt = np.array([[1.0, 1.0]])
    assert math.isnan(entanglement_score(pt, pt))
    with pytest.raises(ValueError):
        entanglement_score(np.zeros((0, 2)), pt)


def test_es_normalized_hand():
    r = np.array([[3.0, 0.0], [0.0, 0.5]])  # -> (1,0), (0,1)
    f = np.array([[-5.0, 0.0]])  # -> (-1,0)
    # mu_R = (.5,.5), intra_R = .5; intra_F = 0; mu = mean of all three = (0, 1/3)
    # ||mu_R - mu||^2 = .25 + 1/36, ||mu_F - mu||^2 = 1 + 1/9
    den = 0.5 * (0.25 + 1 / 36 + 1 + 1 / 9)  # = 0.694444
    raw = 0.5 / den  # = 0.72
    assert raw == pytest.approx(0.72)
    assert entanglement_score_normalized(r, f, scale=1.0) == pytest.approx(0.72)
    assert entanglement_score_normalized(r, f) == pytest.approx(0.72 / 1300)
    assert entanglement_score_normalized(r, f, scale=0.5) == 1.0  # 1.44 clipped
    assert entanglement_score_normalized(r, r) == 0.0  # zero denominator


def test_centroid_groups_hand():
    x = np.array([3.0, -1.0, 0.0, 2.0, -3.0, 1.0, -2.0])  # mean 0
    emb = np.stack([x, np.zeros_like(x)], axis=1)
    ids = np.arange(100, 107)
    # distances 3,1,0,2,3,1,2 -> stable order ids 102, 101, 105, 103, 106, 100, 104
    groups = centroid_distance_groups(emb, ids, 3)
    assert [g.tolist() for g in groups] == [[102, 101], [105, 103], [106, 100]]  # 104 dropped
    assert all(g.dtype == ids.dtype for g in groups)
    with pytest.raises(UserError):
        centroid_distance_groups(emb, ids, 8)


def _groups(g, size):
    return [np.arange(i * 100, i * 100 + size) for i in range(g)]


def test_es_forget_ids_single_group():
    groups = _groups(15, 10)
    assert es_forget_ids(groups, 4, 3).tolist() == [400, 401, 402]
    assert es_forget_ids(groups, 0, 10).tolist() == list(range(10))
    with pytest.raises(UserError, match="--num_indexes_to_replace"):
        es_forget_ids(groups, 4, 11)
    with pytest.raises(UserError, match="--group_index"):
        es_forget_ids(groups, 15, 3)
    with pytest.raises(UserError, match="--group_index"):
        es_forget_ids(groups, -2, 3)


def test_es_forget_ids_mix_15():
    groups = _groups(15, 10)
    ids = es_forget_ids(groups, -1, 10)
    # 10 // 3 = 3 from groups 3 and 12, the remaining 4 from group 14
    assert ids.tolist() == [300, 301, 302, 1200, 1201, 1202, 1400, 1401, 1402, 1403]
    assert len(es_forget_ids(groups, -1, 30)) == 30
    with pytest.raises(UserError, match="--num_indexes_to_replace"):
        es_forget_ids(groups, -1, 31)


def test_es_forget_ids_mix_scaled():
    ids = es_forget_ids(_groups(100, 5), -1, 9)
    # round(100*3/15) = 20, round(100*12/15) = 80, 99
    assert ids.tolist() == [2000, 2001, 2002, 8000, 8001, 8002, 9900, 9901, 9902]
    # 5 groups: low = 1, mid = round(4) = 4 = high -> the high part takes the next unused ids
    ids = es_forget_ids(_groups(5, 10), -1, 7)
    assert ids.tolist() == [100, 101, 400, 401, 402, 403, 404]
    assert len(set(ids.tolist())) == 7
