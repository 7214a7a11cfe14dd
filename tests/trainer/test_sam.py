"""SAM (trainer/sam.py driven by trainer/step.py optimizer_step) against hand computation.

A two-tensor model whose loss has a closed-form gradient (float64), so every SAM variant can be
written out by hand:  e = rho * a^2 g0 / ||a g0|| (a = 1, or |w| when adaptive; the norm over ALL
parameters), g1 = grad(w + e), final g = g0 + s * lamb * (g1 - g0) with s = +1 (min) / -1 (max).
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from trainer.optim import SamConfig, make_optimizer
from trainer.sam import SAM, frozen_bn_stats
from trainer.step import optimizer_step

from quartic import A, C, V0, W0, Quartic


def f(w, v):
    return 0.5 * (A * w ** 2).sum() + 0.25 * (v ** 4).sum() + w[0] * v[1] + (C * v).sum()


def grad(w, v):
    gw = A * w + np.array([v[1], 0.0])
    gv = v ** 3 + C + np.array([0.0, w[0], 0.0])
    return gw, gv


def perturbation(w, v, rho, adaptive):
    gw, gv = grad(w, v)
    aw, av = (np.abs(w), np.abs(v)) if adaptive else (np.ones_like(w), np.ones_like(v))
    norm = np.sqrt(((aw * gw) ** 2).sum() + ((av * gv) ** 2).sum())  # one norm over w AND v
    return rho * aw ** 2 * gw / norm, rho * av ** 2 * gv / norm


def sam_grad(w, v, rho, sign, lamb, adaptive=False):
    g0w, g0v = grad(w, v)
    ew, ev = perturbation(w, v, rho, adaptive)
    g1w, g1v = grad(w + ew, v + ev)
    s = 1.0 if sign == "min" else -1.0
    return g0w + s * lamb * (g1w - g0w), g0v + s * lamb * (g1v - g0v)


def step(model, opt):
    return optimizer_step(model, opt, lambda: (model.loss(), "aux"))


def close(t, a):
    np.testing.assert_allclose(t.detach().numpy(), a, rtol=1e-10, atol=1e-12)


LR = 0.1


def test_min_lamb1_is_the_gradient_at_w_plus_e():
    m = Quartic()
    opt = SAM(m.parameters(), torch.optim.SGD, sign="min", rho=0.3, lamb=1.0, lr=LR, momentum=0.0)
    loss, aux = step(m, opt)
    ew, ev = perturbation(W0, V0, 0.3, False)
    g1w, g1v = grad(W0 + ew, V0 + ev)
    close(m.w, W0 - LR * g1w)
    close(m.v, V0 - LR * g1v)
    # the returned loss is the clean one, at w (not at w + e)
    assert aux == "aux" and abs(float(loss) - f(W0, V0)) < 1e-12
    assert not any(opt.state[p] for p in m.parameters())  # the saved w and g0 are dropped


def test_max_lamb1_is_2g0_minus_g1():
    m = Quartic()
    opt = SAM(m.parameters(), torch.optim.SGD, sign="max", rho=0.3, lamb=1.0, lr=LR)
    step(m, opt)
    g0w, g0v = grad(W0, V0)
    ew, ev = perturbation(W0, V0, 0.3, False)
    g1w, g1v = grad(W0 + ew, V0 + ev)
    close(m.w, W0 - LR * (2 * g0w - g1w))
    close(m.v, V0 - LR * (2 * g0v - g1v))


@pytest.mark.parametrize("sign", ["min", "max"])
@pytest.mark.parametrize("lamb", [0.0, 0.3, 2.5])
@pytest.mark.parametrize("adaptive", [False, True])
def test_general_lambda(sign, lamb, adaptive):
    m = Quartic()
    opt = SAM(m.parameters(), torch.optim.SGD, sign=sign, rho=0.7, lamb=lamb, adaptive=adaptive, lr=LR)
    step(m, opt)
    gw, gv = sam_grad(W0, V0, 0.7, sign, lamb, adaptive)
    close(m.w, W0 - LR * gw)
    close(m.v, V0 - LR * gv)
    if sign == "max":  # (1 + lamb) g0 - lamb g1
        g0w, _ = grad(W0, V0)
        ew, ev = perturbation(W0, V0, 0.7, adaptive)
        g1w, _ = grad(W0 + ew, V0 + ev)
        np.testing.assert_allclose(gw, (1 + lamb) * g0w - lamb * g1w, rtol=1e-12)


def test_adaptive_perturbation_formula_and_global_norm():
    """e = rho w^2 g / || |w| g ||, the norm taken over all parameters and all param groups; seen
    through the gradient the closure receives at w + e."""
    m = Quartic()
    seen = []

    def closure():
        seen.append((m.w.detach().clone().numpy(), m.v.detach().clone().numpy()))
        return m.loss()

    # two param groups with different learning rates: the norm is still one global norm
    opt = SAM([{"params": [m.w]}, {"params": [m.v], "lr": 0.05}], torch.optim.SGD, sign="min", rho=0.4,
              adaptive=True, lr=LR)
    optimizer_step(m, opt, closure)
    g0w, g0v = grad(W0, V0)
    norm = np.sqrt(((np.abs(W0) * g0w) ** 2).sum() + ((np.abs(V0) * g0v) ** 2).sum())
    ew, ev = 0.4 * W0 ** 2 * g0w / norm, 0.4 * V0 ** 2 * g0v / norm
    np.testing.assert_allclose(seen[0][0], W0) and np.testing.assert_allclose(seen[0][1], V0)
    np.testing.assert_allclose(seen[1][0], W0 + ew, rtol=1e-12)
    np.testing.assert_allclose(seen[1][1], V0 + ev, rtol=1e-12)
    # per-tensor norms would give a different point
    per_w = 0.4 * W0 ** 2 * g0w / np.linalg.norm(np.abs(W0) * g0w)
    assert not np.allclose(seen[1][0], W0 + per_w)
    g1w, g1v = grad(W0 + ew, V0 + ev)
    close(m.w, W0 - LR * g1w)
    close(m.v, V0 - 0.05 * g1v)


def test_factory_sam_with_momentum_and_weight_decay_by_hand():
    """make_optimizer(sgd, SamConfig): two steps; weight decay applies at w (not w + e), momentum
    accumulates the SAM gradient."""
    m = Quartic()
    opt = make_optimizer(m.parameters(), "sgd", lr=LR, momentum=0.9, weight_decay=0.01,
                         sam=SamConfig(sign="min", rho=0.25, lamb=0.8, adaptive=False))
    assert isinstance(opt, SAM)
    w, v = W0.copy(), V0.copy()
    buf = None
    for _ in range(2):
        gw, gv = sam_grad(w, v, 0.25, "min", 0.8)
        dw, dv = gw + 0.01 * w, gv + 0.01 * v
        buf = (dw, dv) if buf is None else (0.9 * buf[0] + dw, 0.9 * buf[1] + dv)
        w, v = w - LR * buf[0], v - LR * buf[1]
        step(m, opt)
        close(m.w, w)
        close(m.v, v)


# --- rho = 0 and BatchNorm --------------------------------------------------------------------

def _bn_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def _batches(n=4):
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(16, 3, 6, 6, generator=g), torch.randint(0, 5, (16,), generator=g)) for _ in range(n)]


def _train(model, opt, batches):
    for x, y in batches:
        optimizer_step(model, opt, lambda: nn.functional.cross_entropy(model(x), y))


@pytest.mark.parametrize("sign,lamb,adaptive", [("min", 1.0, False), ("max", 1.0, False), ("min", 0.5, True),
                                                ("max", 2.0, False)])
def test_rho_zero_is_the_base_step_bitwise(sign, lamb, adaptive):
    base, sam = _bn_net(), _bn_net()
    kw = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)
    _train(base, torch.optim.SGD(base.parameters(), **kw), _batches())
    _train(sam, SAM(sam.parameters(), torch.optim.SGD, sign=sign, rho=0.0, lamb=lamb, adaptive=adaptive, **kw),
           _batches())
    sb, ss = base.state_dict(), sam.state_dict()
    for k in sb:
        assert torch.equal(sb[k], ss[k]), k
    assert not torch.equal(sb["0.weight"], _bn_net().state_dict()["0.weight"])  # it did train


def test_bn_running_stats_untouched_by_the_perturbed_pass():
    net = _bn_net()
    ref = copy.deepcopy(net)
    x, y = _batches(1)[0]
    opt = SAM(net.parameters(), torch.optim.SGD, sign="min", rho=2.0, lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        return nn.functional.cross_entropy(net(x), y)

    optimizer_step(net, opt, closure)
    assert len(calls) == 2
    ref.train()
    with torch.no_grad():
        ref(x)  # one clean forward in train mode: the only update the stats may see
    for name in ("1", "4"):
        bn, rbn = net.get_submodule(name), ref.get_submodule(name)
        assert int(bn.num_batches_tracked) == 1 == int(rbn.num_batches_tracked)
        assert torch.equal(bn.running_mean, rbn.running_mean)
        assert torch.equal(bn.running_var, rbn.running_var)
        assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))  # it did update once
        assert bn.track_running_stats


def test_perturbed_pass_normalizes_with_batch_statistics():
    """Inside frozen_bn_stats a train-mode BN uses the batch's statistics (same output as a normal
    train-mode forward) and leaves its buffers alone; the flag comes back even after an error."""
    net = _bn_net()
    x, _ = _batches(1)[0]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        with frozen_bn_stats(net):
            out = net(x)
        for k, v in net.state_dict().items():
            assert torch.equal(v, before[k]), k
        assert torch.allclose(out, net(x), atol=1e-6)  # a normal forward, which updates the stats
    assert int(net[1].num_batches_tracked) == 1
    with pytest.raises(RuntimeError):
        with frozen_bn_stats(net):
            raise RuntimeError("boom")
    assert net[1].track_running_stats and net[4].track_running_stats


def test_state_dict_round_trip_relinks_param_groups():
    """SAM's state is its base optimizer's; after load_state_dict an LR scheduler still drives the
    base optimizer (needed by --resume), without a false "scheduler before optimizer" warning."""
    net = _bn_net()
    opt = SAM(net.parameters(), torch.optim.SGD, sign="min", rho=0.1, lr=0.1, momentum=0.9)
    _train(net, opt, _batches(2))
    state = opt.state_dict()
    assert any("momentum_buffer" in s for s in state["state"].values())
    opt2 = SAM(net.parameters(), torch.optim.SGD, sign="min", rho=0.1, lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt2, lambda e: 0.5 ** e)
    opt2.load_state_dict(state)
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    _train(net, opt2, _batches(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the scheduler sees SAM's step: no "step order" warning
        sched.step()
    assert opt2.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    with pytest.raises(RuntimeError):
        opt2.step()  # only second_step may step
