"""Shadow models (evaluation/audits/shadows.py): recipes, subsets, the file, training, and the
calibration of LiRA's 'never seen' test on digits with shadows that match the retrain."""
import numpy as np
import pytest
import torch

from evaluation.audits.lira import binomial_range, lira_scores, logit_confidence
from evaluation.audits.shadows import (find_shadows, left_out, load_shadows, new_shadow_set, recipe_from_key,
                                       save_shadows, shadow_file_name, shadow_pool, train_shadows)
from models import build_for
from trainer.device import prepare_model
from trainer.ensemble import predict_ensemble, train_models
from utils.data import load_data

KEY = dict(dataset="digits", arch="mlp", imagenet_arch=False, epochs=10, lr=0.1, batch_size=64, momentum=0.9,
           weight_decay=5e-4, warmup=0, augment=True, optimizer="sgd", precision="fp32", split_seed=1)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", "datasets")


def test_recipe_from_key():
    r = recipe_from_key(KEY)
    assert (r.epochs, r.lr, r.batch_size, r.augment, r.sam, r.precision) == (10, 0.1, 64, True, None, "fp32")
    s = recipe_from_key({**KEY, "optimizer": "sam-min_rho1_lamb0.5_adaptive"}).sam
    assert (s.sign, s.rho, s.lamb, s.adaptive) == ("min", 1.0, 0.5, True)
    assert recipe_from_key({**KEY, "optimizer": "sam-max_rho0.1_lamb1"}).sam.adaptive is False
    with pytest.raises(ValueError):
        recipe_from_key({"model": "someone_elses_checkpoint"})


def test_pools_and_subsets(digits):
    f = digits.train_ids[::20]
    pool = shadow_pool("forget", f, digits.train_ids)
    assert len(pool) == 2 * len(f) and np.isin(f, pool).all() and np.isin(pool, digits.train_ids).all()
    assert np.array_equal(shadow_pool("all", f, digits.train_ids), digits.train_ids)
    out = left_out(pool, 7)
    assert len(out) == len(f) and np.isin(out, pool).all() and np.array_equal(out, left_out(pool, 7))
    s = new_shadow_set(KEY, "forget", pool, digits.train_ids, len(digits.x), len(digits.test_y), 6)
    # every shadow trains on the training split less |F| pool ids: as many as a retrain of F
    assert s.in_mask.sum(1).tolist() == [len(digits.train_ids) - len(f)] * 6
    assert not s.in_mask[:, digits.val_ids].any()
    assert len({m.tobytes() for m in s.in_mask}) == 6
    # pool retrain: every shadow is a retrain of F (all of it left out, nothing else)
    rp = shadow_pool("retrain", f[::-1], digits.train_ids)
    assert np.array_equal(rp, np.sort(f)) and np.array_equal(left_out(rp, 7, "retrain"), np.sort(f))
    r = new_shadow_set(KEY, "retrain", rp, digits.train_ids, len(digits.x), len(digits.test_y), 3)
    want = np.zeros(len(digits.x), bool)
    want[np.setdiff1d(digits.train_ids, f)] = True
    assert all(np.array_equal(m, want) for m in r.in_mask)
    assert shadow_file_name(KEY, "retrain", rp) != shadow_file_name(KEY, "forget", rp)
    assert "_retrain" in shadow_file_name(KEY, "retrain", rp)


def test_file_roundtrip_and_lookup(digits, tmp_path):
    f = digits.train_ids[:30]
    pool = shadow_pool("forget", f, digits.train_ids)
    s = new_shadow_set(KEY, "forget", pool, digits.train_ids, len(digits.x), len(digits.test_y), 12)
    s.done[:] = True
    assert (~s.in_mask[:, f]).sum(0).min() >= 1
    path = tmp_path / shadow_file_name(KEY, "forget", pool)
    save_shadows(path, s)
    back = load_shadows(path)
    assert back.manifest == s.manifest and np.array_equal(back.in_mask, s.in_mask)
    p, found, _ = find_shadows(tmp_path, KEY, "forget", pool)
    assert found is not None and p == path
    # another recipe: not found, and the reason names the difference
    p, found, reasons = find_shadows(tmp_path, {**KEY, "epochs": 20}, "forget", pool)
    assert found is None and "epochs 10 vs 20" in reasons[0]
    # too few finished models: not found; another pool: not found
    assert find_shadows(tmp_path, KEY, "forget", pool, 13)[1] is None
    p, found, reasons = find_shadows(tmp_path, KEY, "all", digits.train_ids)
    assert found is None and "another pool" in reasons[0]
    # growing the set keeps the finished models
    more = new_shadow_set(KEY, "forget", pool, digits.train_ids, len(digits.x), len(digits.test_y), 14, old=back)
    assert more.done.tolist() == [True] * 12 + [False] * 2 and np.array_equal(more.in_mask[:12], s.in_mask)


def _retrains(digits, forget, seeds):
    models = []
    for s in seeds:
        torch.manual_seed(s)
        models.append(prepare_model(build_for("mlp", digits), torch.device("cpu")))
    sub = np.setdiff1d(digits.train_ids, forget)
    train_models(models, digits, [sub] * len(seeds), seeds, recipe_from_key(KEY), log=None)
    logits = predict_ensemble(models, digits.x, forget).numpy()
    return logit_confidence(logits, digits.y.numpy()[forget])


def test_calibration_on_digits_retrains_are_rejected_at_the_level(digits, tmp_path):
    """Retrains of a forget set (models that never saw it, trained with the shadows' recipe) are
    rejected as 'never seen' at about the test's level. The range is the binomial one of a single
    retrain's |F| examples at 99%, since retrains of one set share their examples."""
    rng = np.random.default_rng(0)
    forget = np.sort(rng.choice(digits.train_ids, 150, replace=False))
    pool = shadow_pool("forget", forget, digits.train_ids)
    s = new_shadow_set(KEY, "forget", pool, digits.train_ids, len(digits.x), len(digits.test_y), 16)
    path = tmp_path / "shadows.npz"
    train_shadows(s, path, digits, digits, torch.device("cpu"), log=lambda m: None)
    assert s.done.all() and load_shadows(path).done.all() and np.mean(s.test_acc) > 0.85
    phi = _retrains(digits, forget, [101, 102, 103, 104])
    rej = [np.mean(lira_scores(p, s.phi[:, forget], s.in_mask[:, forget])["p"] < 0.05) for p in phi]
    lo, hi = binomial_range(len(forget), 0.05, 0.99)
    assert lo <= float(np.mean(rej)) <= hi, rej
