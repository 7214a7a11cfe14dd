"""``--release`` (unlearn/release.py and the switches it drives) against the release's behaviour as
upstream-spec §5.7, §5.9 and §11.1 describe it, re-derived by hand on toy models."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import unlearn.neggrad_plus as ngp
from trainer.mask import ReleaseMask, is_release_mask
from trainer.optim import SamConfig, make_optimizer
from trainer.sam import SAM
from unlearn import get_method
from unlearn.base import UnlearnConfig, make_unlearn_optimizer
from unlearn.release import release_config
from utils.batches import Batch

from helpers import (TOY_FORGET as FORGET, TOY_N as N, TOY_RETAIN as RETAIN,
                     toy_data as _data, toy_model as _model, toy_task as _task)


def _mask(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()}


def _batch(data, ids):
    ids = torch.as_tensor(ids)
    return Batch(data.x[ids].float() / 255, data.y[ids], ids)


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ---------------------------------------------------------------------------------------------
# the config switch and the optimizer
# ---------------------------------------------------------------------------------------------

def test_release_config_sets_adamw_and_the_release_mask():
    model = _model()
    mask = _mask(model)
    cfg = UnlearnConfig(lr=0.02, weight_decay=1e-3, optimizer="sgd", mask=mask)
    rel = release_config(cfg)
    assert rel.release and rel.optimizer == "adamw" and rel.lr == 0.02 and rel.weight_decay == 1e-3
    assert is_release_mask(rel.mask) and rel.mask.keys() == mask.keys()
    assert all(rel.mask[n] is mask[n] for n in mask)
    assert not cfg.release and cfg.optimizer == "sgd" and not is_release_mask(cfg.mask)  # cfg untouched
    assert release_config(UnlearnConfig()).mask is None


@pytest.mark.parametrize("sam", [None, SamConfig("min", rho=1.0, lamb=1.0, adaptive=True)])
@pytest.mark.filterwarnings("ignore:Detected call of")
def test_release_optimizer_is_adamw_with_the_release_settings(sam):
    """AdamW(params, lr=--unlearn_lr, weight_decay=--weight_decay), torch's defaults otherwise
    (upstream-spec §2.5, §5.7-3), under SAM when --sam; MultiStepLR gamma 0.1 over --decreasing_lr."""
    model = _model()
    cfg = release_config(UnlearnConfig(lr=0.03, weight_decay=5e-4, sam=sam, milestones=(2,)))
    opt, sched = make_unlearn_optimizer(model.parameters(), cfg)
    base = opt.base_optimizer if sam is not None else opt
    assert isinstance(base, torch.optim.AdamW) and isinstance(opt, SAM) == (sam is not None)
    g = base.param_groups[0]
    assert (g["lr"], g["weight_decay"], g["betas"], g["eps"], g["amsgrad"]) == (0.03, 5e-4, (0.9, 0.999), 1e-8, False)
    for _ in range(2):
        sched.step()
    assert base.param_groups[0]["lr"] == pytest.approx(0.003)


# ---------------------------------------------------------------------------------------------
# Sharp MinMax: the release's sub-steps by hand
# ---------------------------------------------------------------------------------------------

def _grad(model, params, closure_batch, weight):
    """grad of weight * CE(f_params(x), y) at ``params`` (a dict of tensors), by autograd."""
    ps = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    out = functional_call(model, ps, (closure_batch.x,))
    loss = weight * nn.functional.cross_entropy(out.float(), closure_batch.y)
    gs = torch.autograd.grad(loss, list(ps.values()))
    return dict(zip(ps, gs))


def _release_substep(model, w, batch, weight, part, sam, update):
    """The release's SAM sub-step (upstream-spec §2.2, §2.3, §5.9): e from the full gradient over all
    weights, g = g0 + s lamb (part * g1 - g0), then ``update(w, g)`` on every entry."""
    g0 = _grad(model, w, batch, weight)
    a = {n: w[n].abs() if sam.adaptive else torch.ones_like(w[n]) for n in w}
    norm = torch.stack([(a[n] * g0[n]).norm() for n in w]).norm()
    e = {n: sam.rho * a[n] ** 2 * g0[n] / (norm + 1e-12) for n in w}
    g1 = _grad(model, {n: w[n] + e[n] for n in w}, batch, weight)
    s = 1.0 if sam.sign == "min" else -1.0
    g = {n: g0[n] + s * sam.lamb * (part[n].float() * g1[n] - g0[n]) for n in w}
    return {n: update(w[n], g[n]) for n in w}


def _two_opts(model, kind, cfg_sam, signs, **kw):
    mk = lambda sign: make_optimizer(model.parameters(), kind, sam=SamConfig(sign, cfg_sam.rho, cfg_sam.lamb,
                                                                             cfg_sam.adaptive), **kw)
    return mk(signs[0]), mk(signs[1])


@pytest.mark.parametrize("signs", [("min", "max"), ("max", "min")])
@pytest.mark.parametrize("adaptive", [False, True])
def test_release_minmax_step_by_hand_sgd(signs, adaptive):
    """Plain SGD (lr only) makes every term of the release's formula visible: two sub-steps, the
    retain one on ~M, the forget one on M, each g = g0 + s lamb (P g1 - g0) applied to ALL weights."""
    data = _data()
    model = _model()
    mask = ReleaseMask({n: m for n, m in _mask(model).items()})
    br, bf = _batch(data, RETAIN[:16]), _batch(data, FORGET[:8])
    alpha, lr = 0.9, 0.05
    sam = SamConfig("min", rho=0.5 if not adaptive else 2.0, lamb=1.0, adaptive=adaptive)
    w = _params(model)
    ref = copy.deepcopy(model)
    opt_r, opt_f = _two_opts(model, "sgd", sam, signs, lr=lr, momentum=0.0, weight_decay=0.0)
    ngp.minmax_step(model, opt_r, opt_f, br, bf, alpha, mask)

    sgd = lambda p, g: p - lr * g
    not_m = {n: ~m for n, m in mask.items()}
    w1 = _release_substep(ref, w, br, alpha, not_m, SamConfig(signs[0], sam.rho, 1.0, adaptive), sgd)
    w2 = _release_substep(ref, w1, bf, -(1 - alpha), mask, SamConfig(signs[1], sam.rho, 1.0, adaptive), sgd)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), w2[n], rtol=1e-4, atol=1e-6)
    # with sign max (lamb 1) the sub-step gives the weights OUTSIDE its part 2 g0: they move
    max_part = not_m if signs[0] == "max" else mask
    moved_outside = sum(int((w2[n] != (w if signs[0] == "max" else w1)[n])[~max_part[n]].sum()) for n in w)
    assert moved_outside > 0


def test_release_minmax_adamw_decays_all_weights_twice():
    """--release: two AdamW instances, each decays every weight (upstream-spec §5.9). With sign min,
    lamb 1 both ways, a weight's final gradient in a sub-step outside its part is exactly 0, so on
    that sub-step it moves by decay alone; no weight is frozen."""
    data = _data()
    model = _model()
    mask = ReleaseMask(_mask(model, 3))
    br, bf = _batch(data, RETAIN[:16]), _batch(data, FORGET[:8])
    lr, wd, alpha = 0.01, 0.05, 0.9
    sam = SamConfig("min", rho=0.5, lamb=1.0)
    w = _params(model)
    ref = copy.deepcopy(model)
    opt_r, opt_f = _two_opts(model, "adamw", sam, ("min", "min"), lr=lr, weight_decay=wd)
    ngp.minmax_step(model, opt_r, opt_f, br, bf, alpha, mask)

    def adamw_first(p, g):  # t = 1: m_hat = g, v_hat = g^2
        return p * (1 - lr * wd) - lr * g / (g.abs() + 1e-8)

    not_m = {n: ~m for n, m in mask.items()}
    w1 = _release_substep(ref, w, br, alpha, not_m, sam, adamw_first)
    w2 = _release_substep(ref, w1, bf, -(1 - alpha), mask, sam, adamw_first)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), w2[n], rtol=1e-5, atol=1e-7)
        # a salient weight: decayed (only) in the retain sub-step, then stepped in the forget one
        torch.testing.assert_close(w1[n][mask[n]], w[n][mask[n]] * (1 - lr * wd))


@pytest.mark.parametrize("signs", [("min", "max"), ("min", "min")])
def test_release_vs_default_sharp_minmax_epoch(signs):
    """A whole NG --separate epoch: the default keeps the hard split; --release moves weights outside
    each sub-step's part (decay; with max the 2 g0 leak), so both results differ."""
    data = _data()
    results = {}
    for release in (False, True):
        model = _model("cnn_s")
        mask = _mask(model, 1)
        cfg = UnlearnConfig(lr=0.01, epochs=1, batch_size=8, optimizer="adamw", separate=signs, mask=mask,
                            sam=SamConfig("min", rho=1.0, lamb=1.0, adaptive=True), alpha=0.9)
        cfg = release_config(cfg) if release else cfg
        get_method("NG")(_task(model, data), cfg)
        results[release] = _params(model)
    assert any(not torch.equal(results[False][n], results[True][n]) for n in results[False])


# ---------------------------------------------------------------------------------------------
# NG: replayed forget batches; the mask under SAM
# ---------------------------------------------------------------------------------------------

def _spy_forget(monkeypatch):
    seen = []
    real = ngp.ng_loss

    def spy(model, br, bf, alpha, device="cpu", precision="fp32", **kw):
        seen.append(bf)
        return real(model, br, bf, alpha, device, precision, **kw)

    monkeypatch.setattr(ngp, "ng_loss", spy)
    return seen


def test_release_ng_replays_the_first_pass_of_each_epoch(monkeypatch):
    """itertools.cycle over a shuffled, augmented loader (upstream-spec §11.1-12): 36 retain examples
    / 4 = 9 steps per epoch, 12 forget examples = 3 batches; batch k + 3 IS batch k (same ids, same
    augmented tensors); each epoch draws a new first pass."""
    data = _data()  # digits: random crops of 1 px, so the tensors differ between two draws
    seen = _spy_forget(monkeypatch)
    cfg = release_config(UnlearnConfig(epochs=2, batch_size=4, alpha=0.99))
    get_method("NG")(_task(_model(), data), cfg)
    assert len(seen) == 18
    for epoch in range(2):
        ep = seen[9 * epoch:9 * (epoch + 1)]
        assert sorted(sum((b.ids.tolist() for b in ep[:3]), [])) == FORGET.tolist()
        for k in range(3, 9):
            assert ep[k] is ep[k % 3]
    first = [b.ids.tolist() for b in seen[:3]]
    second = [b.ids.tolist() for b in seen[9:12]]
    assert first != second  # the cycle is built anew every epoch


def test_default_ng_reshuffles_each_pass(monkeypatch):
    data = _data()
    seen = _spy_forget(monkeypatch)
    get_method("NG")(_task(_model(), data), UnlearnConfig(epochs=1, batch_size=4, alpha=0.99))
    passes = [sum((b.ids.tolist() for b in seen[3 * k:3 * k + 3]), []) for k in range(3)]
    assert all(sorted(p) == FORGET.tolist() for p in passes)
    assert passes[0] != passes[1] or passes[1] != passes[2]
    assert not any(seen[k] is seen[k - 3] for k in range(3, 9))


def test_release_ng_under_sam_ignores_the_mask():
    """--release, NG without --separate, with --sam: the release never applies the mask
    (upstream-spec §5.9 "NG"): the run equals the unmasked one bitwise."""
    data = _data()
    sam = SamConfig("max", rho=0.1)
    out = []
    for mask in (_mask(_model(), 2), None):
        model = _model()
        cfg = release_config(UnlearnConfig(lr=0.01, epochs=1, batch_size=8, mask=mask, sam=sam))
        get_method("NG")(_task(model, data), cfg)
        out.append(_params(model))
    assert all(torch.equal(out[0][n], out[1][n]) for n in out[0])


def test_release_ng_plain_masks_the_gradient_but_decay_moves_masked_weights():
    """--release, no SAM: g = M * grad, AdamW; a masked-out weight has zero gradient every step, so
    Adam's moments stay 0 and it moves by the decoupled decay alone: w (1 - lr wd)^steps."""
    data = _data()
    model = _model()
    mask = _mask(model, 2)
    before = _params(model)
    lr, wd = 0.01, 0.1
    cfg = release_config(UnlearnConfig(lr=lr, weight_decay=wd, epochs=1, batch_size=8, mask=mask))
    get_method("NG")(_task(model, data), cfg)
    steps = int(np.ceil(len(RETAIN) / 8))
    for n, p in model.named_parameters():
        expect = before[n].clone()
        for _ in range(steps):
            expect = expect * (1 - lr * wd)
        torch.testing.assert_close(p.detach()[~mask[n]], expect[~mask[n]], rtol=1e-6, atol=0)
        assert bool((p.detach()[mask[n]] != before[n][mask[n]]).any())


# ---------------------------------------------------------------------------------------------
# switches that need a change outside this module's files (see the docstrings)
# ---------------------------------------------------------------------------------------------

def test_release_salun_masked_weights_move_by_weight_decay_alone():
    """--release, SalUn without SAM: g = M * grad, AdamW; masked-out weights: w (1 - lr wd)^steps."""
    data = _data()
    model = _model()
    mask = _mask(model, 4)
    before = _params(model)
    lr, wd = 0.01, 0.1
    get_method("RL")(_task(model, data), release_config(UnlearnConfig(lr=lr, weight_decay=wd, epochs=1,
                                                                     batch_size=16, mask=mask)))
    steps = int(np.ceil(N / 16))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach()[~mask[n]], (before[n] * (1 - lr * wd) ** steps)[~mask[n]],
                                   rtol=1e-5, atol=0)


def test_release_ga_under_sam_ignores_the_mask():
    data = _data()
    out = []
    for mask in (_mask(_model(), 5), None):
        model = _model()
        cfg = release_config(UnlearnConfig(lr=0.01, epochs=1, batch_size=8, mask=mask, sam=SamConfig("min", rho=0.1)))
        get_method("GA")(_task(model, data), cfg)
        out.append(_params(model))
    assert all(torch.equal(out[0][n], out[1][n]) for n in out[0])
