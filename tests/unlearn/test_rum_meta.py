"""unlearn/rum.py: refinement (groups, order, sizes, shuffle), step retain sets, the plan and its
tag, and the sequential executor (chaining, ``none`` steps)."""
import numpy as np

from helpers import state_copy
import pytest
import torch
from torch import nn

from unlearn.rum import (DEFAULT_PLANS, NONE, Step, group_labels, group_sizes, memorization_key, refine,
                         resolve_steps, rum_tag, run_meta, shuffled_groups, step_retain_sets)
from memorization.proxies import PROXY_SIGN
from forget_sets.file import make_forget_set
from forget_sets.select import memorization_groups, proxy_groups, select_level

FLAG_DEFAULTS = (0.01, 10, 0.99)


def _mix(n, seed=0, size=600):
    rng = np.random.RandomState(seed)
    train_ids = np.sort(rng.choice(5 * size, size, replace=False)).astype(np.int64)
    scores = rng.rand(size)
    groups = memorization_groups(train_ids, scores, n)
    fs = make_forget_set(train_ids, select_level(groups, "mix", n), {"kind": "mem", "level": "mix", "n": n})
    by_id = dict(zip(train_ids.tolist(), scores.tolist()))
    return train_ids, groups, fs, np.array([by_id[i] for i in fs.forget_ids.tolist()])


@pytest.mark.parametrize("n", [90, 100, 101])
def test_k3_on_a_mix_set_gives_exactly_its_parts_low_first(n):
    _, groups, fs, key = _mix(n)
    got = refine(fs.forget_ids, key, 3)
    parts = [groups["low"][(-n) // 3:], groups["mid"][: n // 3], groups["high"][: n // 3]]
    assert [len(g) for g in got] == [len(p) for p in parts] == group_sizes(len(fs.forget_ids), 3)
    for g, p in zip(got, parts):
        assert set(g.tolist()) == set(p.tolist())
    # processing order: low -> mid -> high memorization, disjoint score ranges
    by_id = dict(zip(fs.forget_ids.tolist(), key.tolist()))
    ranges = [(min(by_id[i] for i in g), max(by_id[i] for i in g)) for g in got]
    assert ranges[0][1] < ranges[1][0] and ranges[1][1] < ranges[2][0]


def test_group_sizes_remainder_goes_to_the_least_memorized_group():
    assert group_sizes(100, 3) == [34, 33, 33]
    assert group_sizes(10, 4) == [4, 2, 2, 2]
    assert group_sizes(7, 1) == [7]
    with pytest.raises(ValueError):
        group_sizes(2, 3)


@pytest.mark.parametrize("k", [1, 2, 4, 5])
def test_refine_generalizes_to_k(k):
    ids = np.arange(100, 123, dtype=np.int64)
    key = np.random.RandomState(k).rand(len(ids))
    got = refine(ids, key, k)
    assert [len(g) for g in got] == group_sizes(len(ids), k)
    assert sorted(np.concatenate(got).tolist()) == ids.tolist()
    k_of = {i: key[j] for j, i in enumerate(ids.tolist())}
    for a, b in zip(got, got[1:]):
        assert max(k_of[i] for i in a) <= min(k_of[i] for i in b)


def test_refine_ties_keep_forget_set_order():
    ids = np.array([5, 3, 9, 1], dtype=np.int64)
    got = refine(ids, np.zeros(4), 2)
    assert got[1].tolist() == [5, 3] and got[0].tolist() == [9, 1]


def test_negative_proxy_is_flipped_so_high_confidence_comes_first():
    ids = np.arange(9, dtype=np.int64)
    conf = np.array([0.9, 0.1, 0.5, 0.95, 0.2, 0.55, 0.99, 0.3, 0.45])
    assert PROXY_SIGN["confidence"] is True
    got = refine(ids, memorization_key(conf, negative=True), 3)
    assert set(got[0].tolist()) == {0, 3, 6}  # the most confident = least memorized: processed first
    assert set(got[2].tolist()) == {1, 4, 7}
    # a positive proxy (holdout retraining) is not flipped
    got = refine(ids, memorization_key(conf, negative=False), 3)
    assert set(got[0].tolist()) == {1, 4, 7} and set(got[2].tolist()) == {0, 3, 6}


def test_proxy_groups_agree_with_the_builders_sign_convention():
    rng = np.random.RandomState(3)
    train_ids = np.arange(300, dtype=np.int64)
    conf = rng.rand(300)
    g = proxy_groups(train_ids, conf, 20, negative=True)
    fs = make_forget_set(train_ids, np.concatenate([g["high"], g["low"]]), {})
    got = refine(fs.forget_ids, memorization_key(conf[fs.forget_ids], negative=True), 2)
    assert set(got[0].tolist()) == set(g["low"].tolist()) and set(got[1].tolist()) == set(g["high"].tolist())


def test_non_finite_proxy_values_are_least_memorized():
    key = memorization_key(np.array([0.2, np.nan, -0.5, np.inf]), negative=True)
    assert key[1] == -np.inf and key[3] == -np.inf and key[0] == -0.2
    got = refine(np.arange(4, dtype=np.int64), key, 2)
    assert set(got[0].tolist()) == {1, 3}


def test_shuffled_groups_same_sizes_deterministic():
    _, _, fs, key = _mix(100)
    sorted_groups = refine(fs.forget_ids, key, 3)
    sizes = [len(g) for g in sorted_groups]
    a = shuffled_groups(fs.forget_ids, sizes, 2)
    b = shuffled_groups(fs.forget_ids, sizes, 2)
    c = shuffled_groups(fs.forget_ids, sizes, 3)
    assert [len(g) for g in a] == sizes
    assert sorted(np.concatenate(a).tolist()) == sorted(fs.forget_ids.tolist())
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert set(a[0].tolist()) != set(sorted_groups[0].tolist())
    expected = fs.forget_ids[np.random.RandomState(2).permutation(100)]
    assert np.array_equal(np.concatenate(a), expected)


def test_step_retain_sets_exclude_processed_and_current_groups():
    train_ids, _, fs, key = _mix(90)
    groups = refine(fs.forget_ids, key, 3)
    ret = step_retain_sets(fs.retain_ids, groups)
    for j, r in enumerate(ret):
        expect = np.setdiff1d(train_ids, np.concatenate(groups[: j + 1]))
        assert np.array_equal(r, expect)
        assert np.all(np.diff(r) > 0)
    assert np.array_equal(ret[-1], fs.retain_ids)
    assert np.isin(groups[2], ret[0]).all() and np.isin(groups[2], ret[1]).all()
    assert not np.isin(groups[1], ret[1]).any()


def test_labels():
    assert group_labels(3) == ["low", "mid", "high"]
    assert group_labels(2) == ["low", "high"]
    assert group_labels(4) == ["q1", "q2", "q3", "q4"]
    assert group_labels(3, shuffle=True) == ["r1", "r2", "r3"]


def _resolve(**kw):
    base = dict(methods=None, unlearn=None, default=DEFAULT_PLANS["mem"], rum_lr=None, rum_epochs=None,
                rum_alpha=None, lr=None, epochs=None, alpha=None, flag_defaults=FLAG_DEFAULTS)
    base.update(kw)
    return resolve_steps(3, **base)


def test_default_plans_are_the_two_rum_examples():
    steps, src = _resolve()
    assert src == "default" and [s.method for s in steps] == [NONE, "FT", "RL"]
    assert [(s.lr, s.epochs) for s in steps[1:]] == [(0.1, 10), (0.1, 5)]
    steps, _ = _resolve(default=DEFAULT_PLANS["proxy"])
    assert [s.method for s in steps] == ["NG"] * 3
    assert [s.alpha for s in steps] == [0.99, 0.97, 0.97]
    assert [s.epochs for s in steps] == [5, 5, 10] and [s.lr for s in steps] == [0.01, 0.01, 0.001]


def test_precedence_rum_list_then_explicit_flag_then_plan_then_flag_default():
    steps, src = _resolve(unlearn="FT")
    assert src == "unlearn" and [(s.method, s.lr, s.epochs) for s in steps] == [("FT", 0.01, 10)] * 3
    steps, _ = _resolve(unlearn="NG", lr=0.05, rum_epochs=[1, 2, 3])
    assert [(s.lr, s.epochs, s.alpha) for s in steps] == [(0.05, 1, 0.99), (0.05, 2, 0.99), (0.05, 3, 0.99)]
    steps, _ = _resolve(epochs=2)  # default plan, --unlearn_epochs 2 given
    assert [s.epochs for s in steps] == [2, 2, 2] and steps[1].lr == 0.1
    steps, src = _resolve(methods=["GA", NONE, "SCRUB"], unlearn="FT", rum_lr=[1e-4, 0, 5e-3])
    assert src == "rum_methods" and [s.method for s in steps] == ["GA", NONE, "SCRUB"]
    assert [s.lr for s in steps] == [1e-4, 0, 5e-3]


def test_tags():
    steps, _ = _resolve()
    assert rum_tag(steps, grouping="mem", shuffle=False, common=["sgd"], mask_ratio=0.5) == \
        "RUM_none-FT-RL_mem_lrx-0.1-0.1_epx-10-5_q0.5_sgd"
    steps, _ = _resolve(default=DEFAULT_PLANS["proxy"])
    assert rum_tag(steps, grouping="proxy-confidence", shuffle=True, common=["sgd"]) == \
        "RUM_NG-NG-NG_proxy-confidence_shuffle_lr0.01-0.01-0.001_ep5-5-10_alpha0.99-0.97-0.97_sgd"
    steps, _ = _resolve(methods=["wfisher", "FT", NONE])
    assert rum_tag(steps, grouping="mem", shuffle=False) == "RUM_wfisher-FT-none_mem_lrx-0.01-x_epx-10-x_alpha0.99-x-x"


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.arange(4, dtype=torch.float32))


def test_run_meta_chains_and_none_leaves_weights_bitwise_unchanged():
    model = _Toy()
    start = state_copy(model)
    seen, ends = [], []

    def execute(m, step):
        seen.append(state_copy(m))
        with torch.no_grad():
            m.w.add_(step.index + 1.5)
        if step.index == 2:  # a method may also hand back another model object
            other = _Toy()
            other.load_state_dict(m.state_dict())
            return other, 0.25, {"x": 1}
        return m, 0.5, {}

    steps = [Step(j, lab, meth, np.array([j]), np.array([9])) for j, (lab, meth) in
             enumerate(zip(["a", "b", "c", "d"], ["FT", NONE, "GA", "FT"]))]
    model, results = run_meta(model, steps, execute, after_step=lambda m, s, r: ends.append(state_copy(m)))
    assert [r.seconds for r in results] == [0.5, 0.0, 0.25, 0.5] and results[2].info == {"x": 1}
    assert len(seen) == 3  # none is not executed
    assert torch.equal(seen[0]["w"], start["w"])
    assert torch.equal(ends[1]["w"], ends[0]["w"])  # the none step: bitwise unchanged
    assert torch.equal(seen[1]["w"], ends[1]["w"])  # step 2 starts where step 1 ended
    assert torch.equal(seen[2]["w"], ends[2]["w"])  # step 3 starts from the model step 2 handed back
    assert torch.equal(model.w.detach(), ends[3]["w"])
    assert torch.equal(model.w.detach(), torch.arange(4.0) + 1.5 + 3.5 + 4.5)
