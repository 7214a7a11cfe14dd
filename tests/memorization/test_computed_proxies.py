"""Holdout retraining and loss curvature (memorization/computed_proxies.py)."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from models import build_model
from trainer.fit import Recipe
from utils.data import load_data
from memorization.computed_proxies import (curvature_batch, curvature_pass, holdout_retraining, loss_curvature,
                                           symmetric_kl)


@pytest.fixture(scope="module")
def data():
    return load_data("digits")


def _mlp(data, seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", data.num_classes, in_channels=1, image_size=8, mean=data.mean, std=data.std)


def test_symmetric_kl():
    a = np.log(np.array([[0.5, 0.5], [0.2, 0.8]]))
    b = np.log(np.array([[0.9, 0.1], [0.2, 0.8]]))
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    want = 0.5 * ((p * np.log(p / q)).sum() + (q * np.log(q / p)).sum())
    out = symmetric_kl(a, b)
    assert np.allclose(out, [want, 0.0]) and np.allclose(symmetric_kl(b, a), out)
    # probabilities are clamped at 1e-10: extreme logits stay finite
    ext = symmetric_kl(np.array([[0.0, 500.0]]), np.array([[500.0, 0.0]]))
    assert np.isfinite(ext).all() and ext[0] == pytest.approx(np.log(1e10), rel=1e-6)


def test_curvature_matches_hessian_vector_product():
    """For small h, grad(l(x+z)) - grad(l(x)) = H z; with z = h sign(g)/||sign(g)||."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    x = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    h = 1e-6
    got = curvature_batch(model, x, y, h)
    for i in range(3):
        def loss(v, i=i):
            return nn.functional.cross_entropy(model(v.view(1, 1, 2, 2)), y[i:i + 1])
        v = x[i].flatten().clone().requires_grad_(True)
        g = torch.autograd.grad(loss(v), v)[0]
        z = h * torch.sign(g) / torch.sign(g).norm()
        H = torch.autograd.functional.hessian(loss, x[i].flatten())
        assert got[i].item() == pytest.approx((H @ z).norm().item(), rel=1e-3)
    # it scales with h
    assert torch.allclose(curvature_batch(model, x, y, 2 * h), 2 * got, rtol=1e-3)


def test_curvature_zero_gradient():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    nn.init.zeros_(model[1].weight)
    out = curvature_batch(model.eval(), torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), 0.01)
    assert torch.equal(out, torch.zeros(2))


def test_holdout_retraining(data):
    model = _mlp(data)
    before = copy.deepcopy(model.state_dict())
    ids = data.train_ids[:100]
    scores, rep = holdout_retraining(model, data, ids, epochs=2, lr=0.05, batch_size=128, seed=1, log=None)
    assert scores.shape == (100,) and np.isfinite(scores).all() and (scores >= 0).all() and scores.max() > 0
    assert rep["epochs_run"] == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    # lr 0: nothing changes
    scores0, _ = holdout_retraining(model, data, ids, epochs=1, lr=0.0, weight_decay=0.0, seed=1, log=None)
    assert np.allclose(scores0, 0.0, atol=1e-9)


def test_holdout_early_stopping(data, monkeypatch):
    """Stop after 4 epochs in a row without a running loss below the best so far."""
    losses = iter([3.0, 2.0, 2.5, 1.9, 2.2, 2.0, 1.95, 1.9, 1.0, 0.5])
    calls = []

    def fake_epoch(model, opt, batches, **kw):
        calls.append(1)
        return {"loss": next(losses), "acc": 0.0}

    monkeypatch.setattr("memorization.computed_proxies.train_epoch", fake_epoch)
    _, rep = holdout_retraining(_mlp(data), data, data.train_ids[:8], epochs=30, lr=0.1, seed=1, log=None)
    assert rep["epochs_run"] == 8 and len(calls) == 8 and rep["final_loss"] == 1.9


def test_loss_curvature_run(data):
    ids = data.train_ids[:64]
    model = _mlp(data)
    recipe = Recipe(epochs=2, lr=0.05, batch_size=32, augment=False)
    mean, per_epoch = loss_curvature(model, data, ids, recipe, h=0.01, seed=3, log=None)
    assert per_epoch.shape == (2, 64) and mean.shape == (64,)
    assert np.allclose(mean, per_epoch.mean(0)) and np.isfinite(per_epoch).all() and (per_epoch >= 0).all()
    # the last epoch's values are the curvature of the trained model
    assert np.allclose(per_epoch[-1], curvature_pass(model, data, ids, 0.01), rtol=1e-5, atol=1e-8)
    assert model.training and all(p.requires_grad for p in model.parameters())
