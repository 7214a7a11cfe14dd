"""Memorization score and proxy files: finding them, and refusing bad ones with one-line UserErrors."""
import numpy as np
import pytest

from utils.errors import UserError
from memorization.scores import PUBLISHED, computed_score_name, find_score_file, load_proxy, load_scores, score_key


def _one_line(e):
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_published_table():
    assert PUBLISHED["cifar100"] == ("cifar100_infl_matrix.npz", "tr_mem")
    assert PUBLISHED["cifar10"] == ("estimates_results.npz", "memorization")
    assert computed_score_name("digits") == "digits_memorization.npz"
    assert score_key("cifar100", "x/cifar100_infl_matrix.npz") == "tr_mem"
    assert score_key("digits", "x/digits_memorization.npz") is None


def test_load_scores_ok(tmp_path):
    p = tmp_path / "cifar100_infl_matrix.npz"
    s = np.linspace(-0.2, 1.0, 20).astype(np.float32)
    np.savez(p, tr_mem=s, other=np.zeros(3))
    out = load_scores(p, "tr_mem", 20)
    assert out.dtype == np.float64 and np.array_equal(out, s.astype(np.float64))
    assert np.array_equal(load_scores(p, None, 20), out)  # key found automatically


def test_load_scores_short_file(tmp_path):
    p = tmp_path / "s.npz"
    np.savez(p, memorization=np.zeros(19))
    with pytest.raises(UserError) as e:
        load_scores(p, "memorization", 20)
    msg = _one_line(e)
    assert "s.npz" in msg and "19" in msg and "20" in msg


def test_load_scores_corrupt_file(tmp_path):
    p = tmp_path / "estimates_results.npz"
    p.write_bytes(np.random.RandomState(0).bytes(1000))
    with pytest.raises(UserError) as e:
        load_scores(p, "memorization", 20)
    assert "estimates_results.npz" in _one_line(e)
    # a truncated real archive
    good = tmp_path / "good.npz"
    np.savez_compressed(good, memorization=np.random.RandomState(1).rand(5000))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(UserError) as e:
        load_scores(cut, "memorization", 5000)
    assert "cut.npz" in _one_line(e)
    # a plain .npy is not an .npz
    npy = tmp_path / "plain.npy"
    np.save(npy, np.zeros(20))
    with pytest.raises(UserError, match="plain.npy"):
        load_scores(npy, "memorization", 20)


def test_load_scores_nan(tmp_path):
    p = tmp_path / "s.npz"
    s = np.zeros(20)
    s[7] = np.nan
    np.savez(p, memorization=s)
    with pytest.raises(UserError) as e:
        load_scores(p, "memorization", 20)
    assert "non-finite" in _one_line(e) and "s.npz" in str(e.value)


def test_load_scores_missing_key(tmp_path):
    p = tmp_path / "s.npz"
    np.savez(p, tr_mem=np.zeros(20), tr_labels=np.zeros(20))
    with pytest.raises(UserError) as e:
        load_scores(p, "memorization", 20)
    msg = _one_line(e)
    assert "'memorization'" in msg and "tr_labels" in msg and "tr_mem" in msg
    q = tmp_path / "q.npz"
    np.savez(q, something=np.zeros(20))
    with pytest.raises(UserError, match="something"):
        load_scores(q, None, 20)


def test_load_scores_out_of_range_and_missing(tmp_path):
    p = tmp_path / "s.npz"
    np.savez(p, memorization=np.full(20, 3.0))
    with pytest.raises(UserError, match="outside"):
        load_scores(p, "memorization", 20)
    with pytest.raises(UserError, match="nothere.npz"):
        load_scores(tmp_path / "nothere.npz", "memorization", 20)
    with pytest.raises(UserError, match="1-D"):
        np.savez(p, memorization=np.zeros((4, 5)))
        load_scores(p, "memorization", 20)


def test_find_score_file(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    with pytest.raises(UserError) as e:
        find_score_file("CIFAR100", mem_file=None, search_dirs=[a, b])
    msg = _one_line(e)
    for path in (a / "cifar100_infl_matrix.npz", b / "cifar100_infl_matrix.npz",
                 a / "cifar100_memorization.npz", b / "cifar100_memorization.npz"):
        assert str(path) in msg
    assert "pluskid.github.io/influence-memorization" in msg and "main_memorization.py" in msg
    with pytest.raises(UserError) as e:
        find_score_file("cifar10", mem_file=None, search_dirs=[a])
    assert "estimates_results.npz" in _one_line(e) and "main_memorization.py" in str(e.value)

    computed = b / "cifar10_memorization.npz"
    np.savez(computed, memorization=np.zeros(3))
    assert find_score_file("cifar10", mem_file=None, search_dirs=[a, b]) == computed
    published = b / "estimates_results.npz"
    np.savez(published, memorization=np.zeros(3))
    assert find_score_file("cifar10", mem_file=None, search_dirs=[a, b]) == published
    own = tmp_path / "mine.npz"
    np.savez(own, memorization=np.zeros(3))
    assert find_score_file("cifar10", mem_file=str(own), search_dirs=[a, b]) == own
    with pytest.raises(UserError, match="--mem_file"):
        find_score_file("cifar10", mem_file=str(tmp_path / "nope.npz"), search_dirs=[a, b])


def test_load_proxy(tmp_path):
    p = tmp_path / "proxies.npz"
    ids = np.array([9, 1, 5, 3, 7], dtype=np.int64)
    conf = np.array([0.9, 0.1, 0.5, 0.3, np.nan])
    np.savez(p, ids=ids, confidence=conf, ho_ret=np.arange(5.0))
    got = load_proxy(p, "confidence", np.array([1, 3, 9], dtype=np.int64))
    assert got.tolist() == [0.1, 0.3, 0.9]
    got = load_proxy(p, "confidence", np.array([5, 7], dtype=np.int64))
    assert got[0] == 0.5 and np.isnan(got[1])
    with pytest.raises(UserError) as e:
        load_proxy(p, "bi_acc", np.array([1]))
    msg = _one_line(e)
    assert "--mem_proxy" in msg and "confidence" in msg and "ho_ret" in msg
    with pytest.raises(UserError, match="--mem_proxy"):
        load_proxy(p, "pd", np.array([1]))
    with pytest.raises(UserError, match="lacks 1"):
        load_proxy(p, "confidence", np.array([1, 2]))
    q = tmp_path / "noids.npz"
    np.savez(q, confidence=conf)
    with pytest.raises(UserError, match="'ids'"):
        load_proxy(q, "confidence", np.array([1]))


def test_all_nan_proxy_is_named_as_such(tmp_path):
    p = tmp_path / "proxies.npz"
    np.savez(p, ids=np.arange(4), confidence=np.full(4, np.nan))
    with pytest.raises(UserError, match="'confidence' has no finite value on the 3 training ids"):
        load_proxy(p, "confidence", np.array([0, 1, 2], dtype=np.int64))
