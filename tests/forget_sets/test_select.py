"""Forget-set selection rules (upstream-spec §4.5, §5.3; rum-spec §1.2) and the forget-set file."""
import os

import numpy as np
import pytest

from utils.errors import UserError
from memorization.proxies import PROXY_SIGN
from forget_sets.file import (ForgetSet, forget_set_name, load_forget_set, make_forget_set, save_forget_set, sha256_file)
from forget_sets.select import (eval_subsets, memorization_groups, parse_mem, proxy_groups, random_forget, select_level, shuffle_groups)

# Hand-made: 10 examples with non-contiguous global ids, repeated scores and exact ties in
# |score - 0.5| (all values are binary fractions, so every distance is exact).
IDS = np.array([0, 2, 3, 5, 7, 8, 11, 12, 14, 19], dtype=np.int64)
SCORES = np.array([0.25, 0.75, 0.5, 0.25, 1.0, 0.75, 0.0, 0.375, 0.625, 0.5])
# positions -> ids: p0=0 p1=2 p2=3 p3=5 p4=7 p5=8 p6=11 p7=12 p8=14 p9=19
# Stable descending order of positions: 4, 1, 5, 8, 2, 9, 7, 0, 3, 6
#   (1.0; 0.75 p1 before p5; 0.625; 0.5 p2 before p9; 0.375; 0.25 p0 before p3; 0.0)
# Distances to 0.5 in that order: .5 .25 .25 .125 0 0 .125 .25 .25 .5
# Stable re-sort by distance: 2, 9, 8, 7, 1, 5, 0, 3, 4, 6


def _original_groups(scores, n, centre=0.5):
    """The original algorithm in plain Python (positions), for cross-checking."""
    pairs = list(enumerate(scores.tolist()))
    desc = sorted(pairs, key=lambda t: t[1], reverse=True)
    high = [p for p, _ in desc[:n]]
    low = [p for p, _ in desc[-n:]]
    mid = [p for p, _ in sorted(desc, key=lambda t: abs(t[1] - centre))[:n]]
    return high, mid, low


def test_memorization_groups_hand_made_n3():
    g = memorization_groups(IDS, SCORES, 3)
    assert g["high"].tolist() == [7, 2, 8]
    assert g["mid"].tolist() == [3, 19, 14]
    assert g["low"].tolist() == [0, 5, 11]
    assert all(v.dtype == np.int64 for v in g.values())


def test_memorization_groups_hand_made_n5_and_levels():
    g = memorization_groups(IDS, SCORES, 5)
    assert g["high"].tolist() == [7, 2, 8, 14, 3]
    assert g["mid"].tolist() == [3, 19, 14, 12, 2]
    assert g["low"].tolist() == [19, 12, 0, 5, 11]
    assert select_level(g, "high", 5).tolist() == [7, 2, 8, 14, 3]
    assert select_level(g, "4", 5).tolist() == [7, 2, 8, 14, 3]
    assert select_level(g, "mid", 5).tolist() == [3, 19, 14, 12, 2]
    assert select_level(g, "0", 5).tolist() == [19, 12, 0, 5, 11]
    # mix: high[:5//3] + mid[:5//3] + low[(-5)//3:] = 1 + 1 + 2 = 4 ids (the original's arithmetic)
    assert select_level(g, "mix", 5).tolist() == [7, 3, 5, 11]
    # a level with a smaller n equals the groups built with that n
    g3 = memorization_groups(IDS, SCORES, 3)
    for lvl in ("high", "mid", "low"):
        assert select_level(g, lvl, 3).tolist() == g3[lvl].tolist()


def test_mix_1000_takes_334_low():
    rng = np.random.RandomState(0)
    ids = np.arange(0, 10000, 2, dtype=np.int64)
    s = np.round(rng.rand(5000), 2)  # many ties
    g = memorization_groups(ids, s, 1000)
    mix = select_level(g, "mix", 1000)
    assert len(mix) == 1000
    assert mix[:333].tolist() == g["high"][:333].tolist()
    assert mix[333:666].tolist() == g["mid"][:333].tolist()
    assert mix[666:].tolist() == g["low"][-334:].tolist()


@pytest.mark.parametrize("n", [1, 7, 40, 200])
def test_matches_plain_python_original_with_ties(n):
    rng = np.random.RandomState(n)
    s = rng.choice([0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0, -0.25], size=200)
    ids = np.sort(rng.choice(1000, 200, replace=False)).astype(np.int64)
    g = memorization_groups(ids, s, n)
    high, mid, low = _original_groups(s, n)
    assert g["high"].tolist() == ids[high].tolist()
    assert g["mid"].tolist() == ids[mid].tolist()
    assert g["low"].tolist() == ids[low].tolist()


def test_group_size_errors():
    with pytest.raises(UserError, match="--num_indexes_to_replace 11"):
        memorization_groups(IDS, SCORES, 11)
    with pytest.raises(UserError, match="--num_indexes_to_replace"):
        memorization_groups(IDS, SCORES, 0)


@pytest.mark.parametrize("value,level", [("low", "low"), ("MID", "mid"), ("High", "high"), ("mix", "mix"),
                                         ("0", "low"), ("2", "mid"), ("4", "high"), (4, "high")])
def test_parse_mem(value, level):
    assert parse_mem(value) == level


@pytest.mark.parametrize("value", ["1", "3", "5", "medium", "", "-1"])
def test_parse_mem_rejects(value):
    with pytest.raises(UserError, match="--mem") as e:
        parse_mem(value)
    assert "low, mid, high, mix" in str(e.value) and "\n" not in str(e.value)


def test_proxy_groups_sign_and_nan():
    ids = np.array([1, 4, 6, 9, 10, 13, 15], dtype=np.int64)
    v = np.array([0.9, 0.1, 0.5, np.nan, 0.3, 0.7, 0.5])
    # without id 9 (NaN): descending 1(.9) 13(.7) 6(.5) 15(.5) 10(.3) 4(.1); median 0.5
    pos = proxy_groups(ids, v, 2, negative=False)
    assert pos["high"].tolist() == [1, 13]
    assert pos["mid"].tolist() == [6, 15]
    assert pos["low"].tolist() == [10, 4]
    neg = proxy_groups(ids, v, 2, negative=True)
    # roles swapped: high memorization = lowest proxy values, most memorized first
    assert neg["high"].tolist() == [4, 10]
    assert neg["mid"].tolist() == [6, 15]
    assert neg["low"].tolist() == [13, 1]
    assert select_level(neg, "high", 1).tolist() == [4]
    assert select_level(neg, "low", 1).tolist() == [1]
    for g in (pos, neg):
        assert 9 not in np.concatenate(list(g.values()))
    with pytest.raises(UserError, match="--num_indexes_to_replace 7"):
        proxy_groups(ids, v, 7, negative=True)


def test_proxy_mid_is_closest_to_median_not_half():
    ids = np.array([3, 5, 8, 13, 21], dtype=np.int64)
    v = np.array([10.0, 20.0, 30.0, 40.0, 50.0])  # median 30
    g = proxy_groups(ids, v, 1, negative=False)
    assert g["mid"].tolist() == [8]
    assert g["high"].tolist() == [21] and g["low"].tolist() == [3]


def test_proxy_sign_table():
    assert {k for k, neg in PROXY_SIGN.items() if neg} == {"confidence", "max_conf", "entropy", "bi_acc"}
    assert {k for k, neg in PROXY_SIGN.items() if not neg} == {"ho_ret", "curvature"}


def test_shuffle_groups_deterministic_and_faithful():
    g = memorization_groups(IDS, SCORES, 3)
    a = shuffle_groups(g, 3, seed=2)
    b = shuffle_groups(g, 3, seed=2)
    assert all(a[k].tolist() == b[k].tolist() for k in ("high", "mid", "low"))
    pool = np.concatenate([g["high"], g["low"], g["mid"]])
    # the original shuffles a python list of pairs; legacy shuffle draws the same swaps for a list
    lst = pool.tolist()
    np.random.RandomState(2).shuffle(lst)
    assert a["high"].tolist() == lst[:3]
    assert a["mid"].tolist() == lst[3:6]
    assert a["low"].tolist() == lst[6:]
    assert sorted(np.concatenate([a["high"], a["mid"], a["low"]]).tolist()) == sorted(pool.tolist())
    # does not touch the global RNG
    np.random.seed(123)
    x = np.random.rand()
    np.random.seed(123)
    shuffle_groups(g, 3, seed=5)
    assert np.random.rand() == x


def test_eval_subsets():
    g = memorization_groups(IDS, SCORES, 5)
    e = eval_subsets(g, k=2)
    assert e["high_mem"].tolist() == [7, 2]
    assert e["mid_mem"].tolist() == [3, 19]
    assert e["low_mem"].tolist() == [5, 11]
    e = eval_subsets(g)  # k=1000 > n: whole groups
    assert e["low_mem"].tolist() == g["low"].tolist()


def test_random_forget_uses_seed_minus_one():
    ids = np.sort(np.random.RandomState(0).choice(5000, 900, replace=False)).astype(np.int64)
    labels = np.arange(900) % 10
    got = random_forget(ids, labels, 50, None, seed=2)
    want = np.random.RandomState(1).choice(ids, 50, replace=False)
    assert got.dtype == np.int64 and got.tolist() == want.tolist()
    assert random_forget(ids, labels, 50, [-1], seed=2).tolist() == want.tolist()
    # class-wise: all of class 3, ascending
    cls = random_forget(ids, labels, None, [3], seed=2)
    assert cls.tolist() == ids[labels == 3].tolist()
    # n from selected classes
    sub = random_forget(ids, labels, 20, [3, 5], seed=4)
    cand = ids[np.isin(labels, [3, 5])]
    assert sub.tolist() == np.random.RandomState(3).choice(cand, 20, replace=False).tolist()


def test_random_forget_errors():
    ids = np.arange(0, 40, 2, dtype=np.int64)
    labels = np.arange(20) % 4
    with pytest.raises(UserError, match=r"--num_indexes_to_replace 6.*\b5\b"):
        random_forget(ids, labels, 6, [1], seed=2)
    with pytest.raises(UserError, match="--class_to_replace"):
        random_forget(ids, labels, None, [7], seed=2)
    with pytest.raises(UserError, match="--seed"):
        random_forget(ids, labels, 3, None, seed=0)


def test_save_load_round_trip_and_no_temp_files(tmp_path):
    g = memorization_groups(IDS, SCORES, 5)
    forget = select_level(g, "high", 5)
    manifest = {"dataset": "digits", "split_seed": 1, "kind": "mem", "level": "high", "n": 5,
                "score_file": "x.npz", "score_sha256": "ab" * 32, "seed": 2, "shuffle": False}
    fs = make_forget_set(IDS, forget, manifest, extras=eval_subsets(g, 2))
    assert fs.retain_ids.tolist() == [0, 5, 11, 12, 19]
    assert fs.manifest["size"] == 5
    path = tmp_path / "sub" / (forget_set_name(fs.manifest) + ".npz")
    save_forget_set(path, fs)
    assert os.listdir(path.parent) == [path.name]
    back = load_forget_set(path)
    assert back.forget_ids.tolist() == forget.tolist() and back.forget_ids.dtype == np.int64
    assert back.retain_ids.tolist() == fs.retain_ids.tolist()
    assert back.manifest == fs.manifest
    assert set(back.extras) == {"high_mem", "mid_mem", "low_mem"}
    assert back.extras["low_mem"].tolist() == [5, 11]
    assert len(sha256_file(path)) == 64
    with np.load(path, allow_pickle=False) as z:
        assert z["manifest"].shape == () and z["manifest"].dtype.kind == "U"


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    fs = ForgetSet(np.array([1], np.int64), np.array([0, 2], np.int64), {"dataset": "digits"})
    path = tmp_path / "f.npz"

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(RuntimeError):
        save_forget_set(path, fs)
    assert os.listdir(tmp_path) == []


def test_make_forget_set_drops_repeats():
    fs = make_forget_set(IDS, np.array([7, 3, 7, 5]), {"dataset": "digits"})
    assert fs.forget_ids.tolist() == [7, 3, 5]
    assert fs.manifest["duplicates_dropped"] == 1
    with pytest.raises(ValueError):
        make_forget_set(IDS, np.array([1]), {})


def test_load_forget_set_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_forget_set(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(np.random.RandomState(0).bytes(500))
    with pytest.raises(UserError, match="bad.npz"):
        load_forget_set(bad)
    partial = tmp_path / "partial.npz"
    np.savez(partial, forget_ids=np.array([1]))
    with pytest.raises(UserError, match="retain_ids"):
        load_forget_set(partial)


def test_forget_set_names():
    assert forget_set_name({"dataset": "digits", "kind": "mem", "level": "high", "n": 100}) == "digits_mem-high_n100"
    assert forget_set_name({"dataset": "digits", "kind": "mem", "level": "4", "n": 100,
                            "seed": 2, "split_seed": 1}) == "digits_mem-high_n100"
    assert forget_set_name({"dataset": "CIFAR10", "kind": "random", "n": 3000, "seed": 2}) == \
        "cifar10_random_n3000_seed2"
    assert forget_set_name({"dataset": "cifar10", "kind": "class", "classes": [3], "n": None,
                            "size": 4500, "seed": 2}) == "cifar10_class-3_seed2"
    assert forget_set_name({"dataset": "cifar10", "kind": "proxy", "proxy": "confidence", "level": "mix",
                            "n": 3000}) == "cifar10_proxy-confidence-mix_n3000"
    assert forget_set_name({"dataset": "cifar10", "kind": "es", "group": 14, "n": 3000}) == "cifar10_es-g14_n3000"
    assert forget_set_name({"dataset": "cifar10", "kind": "mem", "level": "mix", "n": 3000, "seed": 2,
                            "shuffle": True}) == "cifar10_mem-mix_n3000_seed2_shuffle"
    assert forget_set_name({"dataset": "cifar10", "kind": "random", "n": 10, "seed": 2, "split_seed": 3}) == \
        "cifar10_random_n10_seed2_split3"


def test_group_means():
    from forget_sets.select import group_means

    ids = np.arange(10, 20)
    s = np.linspace(-0.1, 0.9, 10)
    g = group_means(ids, s, 2)
    assert np.isclose(g["high"], (0.9 + s[-2]) / 2) and np.isclose(g["low"], (s[0] + s[1]) / 2)
