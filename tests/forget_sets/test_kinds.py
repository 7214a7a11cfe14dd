"""Forget sets from the command line (forget_sets/kinds.py, forget_sets/store.py) on digits with synthetic score files."""
import os

import numpy as np
import pytest
import torch

from arg_parser import parse_args
from models import build_model
from utils.rundir import save_model
from forget_sets.select import centroid_distance_groups, es_forget_ids
from utils.errors import UserError
from forget_sets.kinds import plan_forget_set as _plan
from forget_sets.store import build_forget_set
from stages.configs import forget_spec
from trainer.evaluate import embed as embed_ids
from forget_sets.file import load_forget_set, make_forget_set, save_forget_set, sha256_file
from forget_sets.select import memorization_groups, proxy_groups, random_forget, select_level, shuffle_groups


def _args(*argv):
    return parse_args(["--dataset", "digits", "--arch", "cnn_s", *argv])


def _quiet(msg):
    _quiet.lines.append(msg)


_quiet.lines = []


def _build(args, data, model_file=None, **kw):
    return build_forget_set(forget_spec(args, start_model=model_file), data, log=_quiet, **kw)


def plan_forget_set(args, data):
    return _plan(forget_spec(args), data)


@pytest.mark.parametrize("level", ["high", "mid", "low", "mix", "4"])
def test_mem_levels(env, data, level):
    _, scores = env
    fs, path = _build(_args("--mem", level, "--num_indexes_to_replace", "50"), data)
    lvl = {"4": "high"}.get(level, level)
    groups = memorization_groups(data.train_ids, scores[data.train_ids], 50)
    assert fs.forget_ids.tolist() == select_level(groups, lvl, 50).tolist()
    assert path == os.path.join("ckpts", "forget_sets", f"digits_mem-{lvl}_n50.npz") or \
        str(path) == os.path.join("ckpts", "forget_sets", f"digits_mem-{lvl}_n50.npz")
    assert fs.retain_ids.tolist() == np.setdiff1d(data.train_ids, fs.forget_ids).tolist()
    assert fs.extras["high_mem"].tolist() == groups["high"].tolist()  # n = 50 < 1000: whole groups
    assert fs.extras["low_mem"].tolist() == groups["low"].tolist()
    assert fs.manifest["score_sha256"] == sha256_file("ckpts/memorization/digits_memorization.npz")
    on_disk = load_forget_set(path)
    assert on_disk.forget_ids.tolist() == fs.forget_ids.tolist() and on_disk.manifest["level"] == lvl


def test_reuse_and_changed_scores(env, data):
    tmp, scores = env
    args = _args("--mem", "high", "--num_indexes_to_replace", "40")
    fs, path = _build(args, data)
    sha = sha256_file(path)
    _quiet.lines.clear()
    fs2, path2 = _build(args, data)
    assert path2 == path and sha256_file(path) == sha and "reusing" in _quiet.lines[-1]
    assert fs2.forget_ids.tolist() == fs.forget_ids.tolist()
    # another seed does not change a memorization forget set: still reused
    _build(_args("--mem", "high", "--num_indexes_to_replace", "40", "--seed", "5"), data)
    assert sha256_file(path) == sha
    # new scores: the old file selects differently -> refused, --overwrite rebuilds
    np.savez(tmp / "ckpts" / "memorization" / "digits_memorization.npz", memorization=1 - scores)
    with pytest.raises(UserError, match="score_sha256"):
        _build(args, data)
    assert sha256_file(path) == sha
    fs3, _ = _build(_args("--mem", "high", "--num_indexes_to_replace", "40", "--overwrite"), data)
    assert set(fs3.forget_ids.tolist()) != set(fs.forget_ids.tolist())


def test_mem_wins_over_group_index(env, data):
    fs, path = _build(_args("--mem", "high", "--group_index", "3", "--num_indexes_to_replace", "30"), data)
    assert fs.manifest["kind"] == "mem" and "precedence" in _quiet.lines[-1]


def test_shuffle(env, data):
    _, scores = env
    fs, path = _build(_args("--mem", "mid", "--num_indexes_to_replace", "30", "--shuffle", "--seed", "3"), data)
    groups = memorization_groups(data.train_ids, scores[data.train_ids], 30)
    want = select_level(shuffle_groups(groups, 30, 3), "mid", 30)
    assert fs.forget_ids.tolist() == list(dict.fromkeys(want.tolist()))
    assert path.name == "digits_mem-mid_n30_seed3_shuffle.npz"
    # eval subsets come from the true scores, not the shuffled groups
    assert fs.extras["high_mem"].tolist() == groups["high"].tolist()
    with pytest.raises(UserError, match="--shuffle"):
        _build(_args("--num_indexes_to_replace", "30", "--shuffle"), data)


def test_random_and_class(env, data):
    fs, path = _build(_args("--num_indexes_to_replace", "25", "--seed", "4"), data)
    assert fs.forget_ids.tolist() == random_forget(data.train_ids, data.labels(data.train_ids), 25, None, 4).tolist()
    assert path.name == "digits_random_n25_seed4.npz" and "high_mem" in fs.extras
    fs, path = _build(_args("--class_to_replace", "3"), data)
    labels = data.labels(data.train_ids)
    assert fs.forget_ids.tolist() == data.train_ids[labels == 3].tolist()
    assert path.name == "digits_class-3_seed2.npz"
    fs, _ = _build(_args("--class_to_replace", "3,5", "--num_indexes_to_replace", "10"), data)
    assert len(fs.forget_ids) == 10 and set(data.labels(fs.forget_ids)) <= {3, 5}


def test_no_scores_no_subsets(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)
    fs, _ = _build(_args("--num_indexes_to_replace", "25"), data)
    assert fs.extras == {}
    with pytest.raises(UserError, match="memorization scores"):
        _build(_args("--mem", "high", "--num_indexes_to_replace", "25"), data)


def test_proxy(env, data):
    tmp, _ = env
    rng = np.random.RandomState(1)
    conf = rng.rand(len(data.train_ids))
    pf = tmp / "p.npz"
    np.savez(pf, ids=data.train_ids, confidence=conf, ho_ret=rng.rand(len(data.train_ids)))
    fs, path = _build(_args("--mem_proxy", "confidence", "--mem", "high", "--num_indexes_to_replace", "20",
                            "--proxy_file", str(pf)), data)
    groups = proxy_groups(data.train_ids, conf, 20, negative=True)
    assert fs.forget_ids.tolist() == groups["high"].tolist()
    assert path.name == "digits_proxy-confidence-high_n20.npz"
    # default location of learning-event proxies: next to the pretrained model
    run = tmp / "ckpts" / "original" / "run"
    run.mkdir(parents=True)
    np.savez(run / "proxies.npz", ids=data.train_ids, confidence=conf)
    fs2, _ = _build(_args("--mem_proxy", "confidence", "--mem", "high", "--num_indexes_to_replace", "20"), data,
                    model_file=run / "model.pt")
    assert fs2.forget_ids.tolist() == fs.forget_ids.tolist()
    # ho_ret lives in ckpts/memorization/<dataset>_<arch>_proxies.npz
    with pytest.raises(UserError, match="digits_cnn_s_proxies.npz"):
        _build(_args("--mem_proxy", "ho_ret", "--mem", "low", "--num_indexes_to_replace", "20"), data)
    np.savez(tmp / "ckpts" / "memorization" / "digits_cnn_s_proxies.npz", ids=data.train_ids, ho_ret=conf)
    fs3, _ = _build(_args("--mem_proxy", "ho_ret", "--mem", "low", "--num_indexes_to_replace", "20"), data)
    assert fs3.forget_ids.tolist() == proxy_groups(data.train_ids, conf, 20, negative=False)["low"].tolist()
    with pytest.raises(UserError, match="needs --mem"):
        _build(_args("--mem_proxy", "confidence", "--num_indexes_to_replace", "20", "--proxy_file", str(pf)), data)


def test_es_groups(env, data):
    tmp, _ = env
    torch.manual_seed(0)
    model = build_model("cnn_s", 10, in_channels=1, image_size=8, mean=data.mean, std=data.std)
    run = tmp / "ckpts" / "original" / "m"
    run.mkdir(parents=True)
    save_model(run, model, arch="cnn_s", num_classes=10, dataset="digits")
    fs, path = _build(_args("--group_index", "2", "--num_indexes_to_replace", "30", "--mask", str(run)), data)
    emb = embed_ids(model, data, data.train_ids, device="cpu")
    groups = centroid_distance_groups(emb, data.train_ids, 15)
    assert fs.forget_ids.tolist() == es_forget_ids(groups, 2, 30).tolist()
    assert path.name.startswith("digits_es-g2_n30_cnn_s-") and fs.manifest["name"] == path.stem
    mix, _ = _build(_args("--group_index", "-1", "--num_indexes_to_replace", "30", "--mask", str(run)), data)
    assert mix.forget_ids.tolist() == es_forget_ids(groups, -1, 30).tolist()
    with pytest.raises(UserError, match="--group_index 15"):
        _build(_args("--group_index", "15", "--mask", str(run)), data)


def test_given_file(env, data):
    tmp, _ = env
    fs = make_forget_set(data.train_ids, data.train_ids[:7], {"dataset": "digits", "kind": "random", "n": 7,
                                                              "seed": 2, "split_seed": 1})
    save_forget_set(tmp / "mine.npz", fs)
    got, path = _build(_args("--forget_set", str(tmp / "mine.npz"), "--mem", "high"), data)
    assert got.forget_ids.tolist() == data.train_ids[:7].tolist() and path == tmp / "mine.npz"
    assert "high_mem" in got.extras  # eval subsets added in memory from the score file
    assert not (tmp / "ckpts" / "forget_sets").exists()
    other = make_forget_set(data.train_ids, data.train_ids[:7], {"dataset": "cifar10", "kind": "random"})
    save_forget_set(tmp / "other.npz", other)
    with pytest.raises(UserError, match="cifar10"):
        _build(_args("--forget_set", str(tmp / "other.npz")), data)


def test_bad_inputs(env, data):
    with pytest.raises(UserError, match="no forget set given"):
        plan_forget_set(_args(), data)
    with pytest.raises(UserError, match="needs --num_indexes_to_replace"):
        plan_forget_set(_args("--mem", "high"), data)
    with pytest.raises(UserError, match="larger than"):
        _build(_args("--mem", "high", "--num_indexes_to_replace", "100000"), data)
    assert not os.path.exists("ckpts/forget_sets")
