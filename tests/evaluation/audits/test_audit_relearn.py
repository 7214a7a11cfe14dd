"""The relearning attack (evaluation/audits/relearn.py) on a toy model and toy data."""
import numpy as np
import pytest
import torch

from evaluation.audits.relearn import RelearnConfig, relearn, split_forget
from models import build_for
from utils.data import ImageData


def _toy(n_pairs: int = 40, n_other: int = 100, seed: int = 0) -> tuple[ImageData, np.ndarray, np.ndarray]:
    """Random 8x8 images with random labels (only memorization helps); the forget set is made of
    pairs of identical examples, so relearning one copy brings back its twin."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n_pairs, 1, 8, 8), dtype=np.uint8)
    x = np.concatenate([base, base, rng.integers(0, 256, (n_other, 1, 8, 8), dtype=np.uint8)])
    y_pairs = rng.integers(0, 10, n_pairs)
    y = np.concatenate([y_pairs, y_pairs, rng.integers(0, 10, n_other)])
    tx, ty = rng.integers(0, 256, (20, 1, 8, 8), dtype=np.uint8), rng.integers(0, 10, 20)
    data = ImageData("digits", torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(tx), torch.from_numpy(ty),
                     10, np.arange(len(x)), np.zeros(0, np.int64), 1, (0.5,), (0.25,))
    return data, np.arange(2 * n_pairs), np.arange(2 * n_pairs, len(x))


def test_split_forget_is_deterministic_and_disjoint():
    a, b = split_forget(np.arange(10)[::-1], 0.3, 5)
    assert len(a) == 3 and len(b) == 7 and not np.intersect1d(a, b).size
    assert np.array_equal(np.union1d(a, b), np.arange(10))
    assert [x.tolist() for x in split_forget(np.arange(10), 0.3, 5)] == [a.tolist(), b.tolist()]
    with pytest.raises(ValueError):
        split_forget(np.array([1]), 0.5, 0)


def test_relearning_brings_back_the_twins_and_leaves_the_model_alone():
    data, forget, retain = _toy()
    torch.manual_seed(0)
    model = build_for("mlp", data)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = RelearnConfig(steps=150, lr=0.1, batch_size=16, fraction=0.5, seed=0)
    res = relearn(model, data, forget, retain, cfg)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # a copy was fine-tuned
    assert res["n_relearn"] == 40 and res["n_heldout"] == 40
    rel, held = split_forget(forget, 0.5, 0)
    twins = np.isin(np.where(held < 40, held + 40, held - 40), rel).mean()
    assert res["after"] >= res["before"] + 0.5 * twins
    # no steps: nothing changes
    zero = relearn(model, data, forget, retain, RelearnConfig(steps=0, seed=0))
    assert zero["gain"] == 0.0 and zero["test_after"] == zero["test_before"]
    # fine-tuning on retain examples: the control, which cannot bring random labels back
    ctl = relearn(model, data, forget, retain, RelearnConfig(steps=150, lr=0.1, batch_size=16, on="retain", seed=0))
    assert ctl["n_relearn"] == 40 and ctl["after"] < res["after"]
