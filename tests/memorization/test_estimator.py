"""The subsampled memorization estimator: subsets, shards, the estimate, progress files, merging."""
import json

import numpy as np
import pytest

from utils.errors import UserError
from memorization.estimator import (estimate, load_progress, merge_progress, model_seeds, new_progress,
                                    save_progress, shard_models, subset_ids, subset_masks, subset_size, write_scores)
from memorization.scores import load_scores

N = 40
TRAIN = np.setdiff1d(np.arange(N), [3, 17, 29])  # 3 "validation" ids


def _manifest(**kw):
    m = {"dataset": "digits", "arch": "mlp", "imagenet_arch": False, "epochs": 1, "lr": 0.1, "batch_size": 8,
         "momentum": 0.9, "weight_decay": 5e-4, "warmup": 0, "augment": False, "subset_ratio": 0.7,
         "num_models": 6, "seed": 2, "split_seed": 1, "num_examples": N, "num_train": len(TRAIN), "num_shards": 2}
    m.update(kw)
    return m


def test_seeds_and_subsets_are_deterministic():
    s = model_seeds(2, 5)
    assert s.dtype == np.int64 and len(set(s.tolist())) == 5
    assert np.array_equal(s, model_seeds(2, 5))
    assert np.array_equal(model_seeds(2, 8)[:5], s)  # model k's seed does not depend on K
    assert not np.array_equal(model_seeds(3, 5), s)
    sub = subset_ids(TRAIN, 0.7, s[0])
    assert len(sub) == subset_size(len(TRAIN), 0.7) == int(0.7 * len(TRAIN))
    assert np.all(np.diff(sub) > 0) and np.isin(sub, TRAIN).all()
    assert np.array_equal(sub, subset_ids(TRAIN, 0.7, s[0]))
    masks = subset_masks(TRAIN, N, 0.7, s)
    assert masks.shape == (5, N) and (masks.sum(1) == len(sub)).all()
    assert not masks[:, [3, 17, 29]].any()  # validation ids are never trained on
    assert subset_size(10, 0.99) == 9 and subset_size(10, 0.01) == 1  # always something in and out


def test_shard_models():
    assert shard_models(10, 1, 3).tolist() == [1, 4, 7]
    allm = np.sort(np.concatenate([shard_models(10, i, 3) for i in range(3)]))
    assert allm.tolist() == list(range(10))
    with pytest.raises(UserError, match="--shard 5"):
        shard_models(10, 5, 2)


def test_estimate_hand_made():
    masks = np.array([[1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]], bool)
    correct = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 1]], bool)
    mem, valid = estimate(masks, correct)
    # id 0: in {0,1} -> 1, out {2,3} -> 0.5; id 1: in {1,2} -> 1, out {0,3} -> 0.5;
    # id 2: in {0,3} -> 1, out {1,2} -> 0; id 3: in every subset -> no estimate.
    assert np.allclose(mem, [0.5, 0.5, 1.0, 0.0]) and valid.tolist() == [True, True, True, False]
    mem, valid = estimate(masks, correct, train_ids=np.array([1, 2]))
    assert valid.tolist() == [False, True, True, False] and mem[0] == 0.0
    with pytest.raises(ValueError):
        estimate(masks, correct[:, :3])


def test_estimate_known_answer():
    """Models that trained on i always get it right, the others with probability 0.3: mem = 0.7."""
    rng = np.random.default_rng(0)
    train = np.arange(200)
    masks = subset_masks(train, 200, 0.7, model_seeds(1, 400))
    correct = masks | (rng.random(masks.shape) < 0.3)
    mem, valid = estimate(masks, correct, train)
    assert valid.all()
    out_acc = (correct & ~masks).sum(0) / (~masks).sum(0)
    assert np.allclose(mem, 1.0 - out_acc)  # exactly in-accuracy (1) minus out-accuracy
    assert abs(mem.mean() - 0.7) < 0.01 and np.abs(mem - 0.7).max() < 0.2
    # an example every model gets right is not memorized
    mem2, _ = estimate(masks, np.ones_like(masks), train)
    assert np.all(mem2 == 0.0)


def test_progress_roundtrip_merge_and_score_file(tmp_path):
    m = _manifest()
    p0, p1 = new_progress(m, TRAIN), new_progress(m, TRAIN)
    assert np.array_equal(p0.masks, p1.masks) and np.array_equal(p0.seeds, model_seeds(2, 6))
    rng = np.random.default_rng(1)
    truth = rng.random((6, N)) < 0.6
    for k in shard_models(6, 0, 2):
        p0.record(k, truth[k], 0.5)
    for k in shard_models(6, 1, 2):
        p1.record(k, truth[k], 0.75)
    f0, f1 = tmp_path / "s0.npz", tmp_path / "s1.npz"
    save_progress(f0, p0)
    save_progress(f1, p1)
    back = load_progress(f0)
    assert back.manifest == m and np.array_equal(back.done, p0.done) and np.array_equal(back.correct, p0.correct)
    merged = merge_progress([(f0, back), (f1, load_progress(f1))])
    assert merged.done.all() and np.array_equal(merged.correct, truth)
    assert np.allclose(merged.test_acc, [0.5, 0.75] * 3)

    out = tmp_path / "digits_memorization.npz"
    arrays = write_scores(out, merged)
    scores = load_scores(out, None, N)  # the format every stage reads
    mem, valid = estimate(merged.masks, truth, TRAIN)
    assert np.array_equal(scores, mem) and np.isfinite(scores).all()
    with np.load(out) as z:
        assert {"memorization", "valid", "subset_masks", "correct", "seeds", "test_acc", "train_ids",
                "manifest"} <= set(z.files)
        assert np.array_equal(z["valid"], valid) and z["subset_masks"].dtype == bool
        assert not z["valid"][[3, 17, 29]].any()
        man = json.loads(str(z["manifest"][()]))
        assert man["num_models"] == 6 and "num_shards" not in man
    assert arrays["seeds"].dtype == np.int64


def test_merge_refuses_missing_models_and_other_settings(tmp_path):
    m = _manifest()
    p0, p1 = new_progress(m, TRAIN), new_progress(m, TRAIN)
    for k in shard_models(6, 0, 2):
        p0.record(k, np.ones(N, bool), 1.0)
    p1.record(1, np.ones(N, bool), 1.0)  # shard 1 stopped after its first model
    with pytest.raises(UserError) as e:
        merge_progress([(tmp_path / "a", p0), (tmp_path / "b", p1)])
    msg = str(e.value)
    assert "\n" not in msg and "models 3, 5" in msg and "shard 1 of 2" in msg
    other = new_progress(_manifest(epochs=2), TRAIN)
    with pytest.raises(UserError, match="epochs"):
        merge_progress([(tmp_path / "a", p0), (tmp_path / "c", other)])


def test_load_progress_corrupt(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="x.npz"):
        load_progress(bad)
