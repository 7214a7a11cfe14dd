"""Batched ensemble training equals one-by-one training with trainer.fit.fit; fallbacks."""
import copy
import dataclasses
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from models import build_model
from trainer.device import prepare_model
from trainer.ensemble import auto_chunk, compare_step_times, correctness, predict_ensemble, train_ensemble, train_models
from trainer.fit import Recipe, fit
from trainer.optim import SamConfig
from utils.data import load_data

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    return load_data("digits")


def _models(arch, data, n, seed0=0):
    out = []
    for k in range(n):
        torch.manual_seed(seed0 + k)
        out.append(build_model(arch, data.num_classes, in_channels=1, image_size=8, mean=data.mean, std=data.std))
    return out


def _subsets(data, n, size, seed=0):
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(data.train_ids, size, replace=False)) for _ in range(n)]


def _max_diff(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


@pytest.mark.parametrize("augment", [False, True])
def test_mlp_ensemble_equals_fit(data, augment):
    models = _models("mlp", data, 3)
    ref = [copy.deepcopy(m) for m in models]
    subsets, seeds = _subsets(data, 3, 80), [5, 6, 7]
    recipe = Recipe(epochs=2, lr=0.05, batch_size=32, augment=augment)  # 3 steps per epoch, last one short
    hist = train_ensemble(models, data, subsets, seeds, recipe, device=CPU, log=None)
    assert len(hist) == 2 and len(hist[0]["train_loss_per_model"]) == 3
    for m, r, sub, s in zip(models, ref, subsets, seeds):
        h = fit(r, data, sub, recipe, seed=s, device=CPU, log=lambda _m: None)
        assert _max_diff(m, r) < 1e-5
        assert np.isclose(h[-1]["train_loss"], hist[-1]["train_loss_per_model"][models.index(m)], atol=1e-5)


def test_cifar100_randaugment_ensemble_equals_fit(cifar_data):
    """CIFAR-100 trains with crop + flip + RandAugment(2, 15): the ensemble's batched augmentation
    draws model k's ops from model k's generator exactly as fit's batches do."""
    c100 = load_data("cifar100", cifar_data[0])
    assert c100.augment.randaugment == (2, 15)
    models = []
    for k in range(2):
        torch.manual_seed(k)
        models.append(build_model("mlp", 100, in_channels=3, image_size=32, mean=c100.mean, std=c100.std))
    ref = [copy.deepcopy(m) for m in models]
    plain = copy.deepcopy(models[0])
    subsets, seeds = _subsets(c100, 2, 48), [3, 4]
    recipe = Recipe(epochs=1, lr=0.05, batch_size=16, augment=True)
    train_ensemble(models, c100, subsets, seeds, recipe, device=CPU, log=None)
    for m, r, sub, s in zip(models, ref, subsets, seeds):
        fit(r, c100, sub, recipe, seed=s, device=CPU, log=lambda _m: None)
        assert _max_diff(m, r) < 1e-5
    # without RandAugment (CIFAR-10's crop + flip) the same seed trains another model
    fit(plain, dataclasses.replace(c100, name="cifar10"), subsets[0], recipe, seed=seeds[0], device=CPU,
        log=lambda _m: None)
    assert _max_diff(plain, ref[0]) > 1e-4


def test_cnn_s_with_batchnorm_equals_fit(data):
    models = _models("cnn_s", data, 2)
    ref = [copy.deepcopy(m) for m in models]
    subsets, seeds = _subsets(data, 2, 24), [1, 2]
    recipe = Recipe(epochs=1, lr=0.1, batch_size=12, augment=False)  # two steps
    train_ensemble(models, data, subsets, seeds, recipe, device=CPU, log=None)
    for m, r, sub, s in zip(models, ref, subsets, seeds):
        fit(r, data, sub, recipe, seed=s, device=CPU, log=lambda _m: None)
        assert _max_diff(m, r) < 1e-4  # parameters and BatchNorm running statistics
        assert int(m.features[1].num_batches_tracked) == 2
        assert not torch.equal(m.features[1].running_mean, torch.zeros(32))


def test_batched_evaluation(data):
    models = _models("cnn_s", data, 3)
    ids = np.arange(50)
    a = predict_ensemble(models, data.x, ids, max_pairs=40)  # several chunks
    b = predict_ensemble(models, data.x, ids, batched=False)
    assert a.shape == (3, 50, 10) and torch.allclose(a, b, atol=1e-5)
    c = correctness(models, data.x, data.y, ids)
    assert c.dtype == bool and c.shape == (3, 50)
    assert np.array_equal(c, (b.argmax(2) == data.y[:50][None]).numpy())


def test_ensemble_refuses_bad_input(data):
    models = _models("mlp", data, 2)
    with pytest.raises(ValueError, match="same size"):
        train_ensemble(models, data, [data.train_ids[:10], data.train_ids[:11]], [1, 2], Recipe(epochs=1))
    with pytest.raises(ValueError, match="SAM"):
        train_ensemble(models, data, _subsets(data, 2, 10), [1, 2], Recipe(epochs=1, sam=SamConfig()))


class _NotVmappable(nn.Module):
    """A model whose forward calls .item(): vmap cannot run it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        scale = 1.0 + 0.0 * float(x.flatten()[0].item())
        return self.fc(x.flatten(1)) * scale


def test_fallback_to_one_by_one(data, capsys):
    torch.manual_seed(0)
    models = [_NotVmappable(), _NotVmappable()]
    before = [copy.deepcopy(m) for m in models]
    recipe = Recipe(epochs=1, lr=0.1, batch_size=16, augment=False)
    mode = train_models(models, data, _subsets(data, 2, 32), [1, 2], recipe, device=CPU)
    assert mode == "sequential"
    assert "one by one" in capsys.readouterr().out
    assert all(_max_diff(m, b) > 0 for m, b in zip(models, before))  # they were trained
    # SAM is not batched either; forcing batching works for a vmappable model
    mlp = _models("mlp", data, 2)
    sam = Recipe(epochs=1, lr=0.1, batch_size=16, augment=False, sam=SamConfig(rho=0.05))
    assert train_models(mlp, data, _subsets(data, 2, 16), [1, 2], sam, device=CPU, log=None) == "sequential"
    assert train_models(mlp, data, _subsets(data, 2, 16), [1, 2], recipe, device=CPU, batched=True,
                        log=None) == "batched"
    assert train_models(mlp, data, _subsets(data, 2, 16), [1, 2], recipe, device=CPU, batched=False,
                        log=None) == "sequential"


def test_auto_chunk(data):
    m = _models("mlp", data, 1)[0]
    x = data.x[:1].float() / 255
    assert auto_chunk(m, x, 64) == 64
    assert auto_chunk(m, x, 64, budget_bytes=1) == 1
    assert 1 <= auto_chunk(_models("cnn_s", data, 1)[0], x, 64, budget_bytes=200 << 20) < 64


def test_no_vmap_fallback_warning(data):
    """On channels_last models (prepare_model) vmap's adaptive_avg_pool2d falls back to a loop and
    torch warns of a "performance drop" at every call: hidden, since batching is timed instead."""
    models = [prepare_model(m, CPU) for m in _models("cnn_s", data, 3)]
    xb, yb = data.x[:16].float().div(255), data.y[:16]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        predict_ensemble(models, data.x, np.arange(20), batched=True)
        t_batched, _, err = compare_step_times(models, xb, yb, Recipe(epochs=1, lr=0.1), CPU, repeats=1)
    assert err is None and t_batched is not None
    assert not [w for w in seen if "performance drop" in str(w.message)]
