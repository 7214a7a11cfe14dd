"""SAM under a saliency mask, against hand computation (DESIGN.md §5, §7.6; upstream-spec §2.3, §5.9).

A two-tensor model (w: 2 entries, v: 3 entries) with a closed-form, non-quadratic loss, in float64.
The mask keeps w[0], v[1], v[2] (True) and freezes w[1], v[0].

Hard mask (our default):
    e  = rho a^2 g0 / ||a g0||     g0 UNMASKED, the norm over all 5 entries (a = 1 or |w|)
    g  = M * (g0 + s lamb (g1 - g0))
    masked-in entries: the base optimizer's update with g; masked-out entries: bitwise unchanged.
ReleaseMask (--release):
    e as above, g = g0 + s lamb (M * g1 - g0), and the base optimizer updates every entry.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.mask import ReleaseMask
from trainer.optim import SamConfig, make_optimizer
from trainer.step import optimizer_step

from quartic import A, C, V0, W0, Quartic

MW = np.array([True, False])
MV = np.array([False, True, True])
LR, WD, MOM = 0.1, 0.01, 0.9


def grad(w, v):
    return A * w + np.array([v[1], 0.0]), v ** 3 + C + np.array([0.0, w[0], 0.0])


def perturbation(w, v, rho, adaptive):
    gw, gv = grad(w, v)
    aw, av = (np.abs(w), np.abs(v)) if adaptive else (np.ones(2), np.ones(3))
    norm = np.sqrt(((aw * gw) ** 2).sum() + ((av * gv) ** 2).sum())  # all entries, masked or not
    return rho * aw ** 2 * gw / norm, rho * av ** 2 * gv / norm


def final_grad(w, v, sam: SamConfig, release: bool):
    """The gradient handed to the base optimizer (the module docstring's formulas)."""
    g0w, g0v = grad(w, v)
    ew, ev = perturbation(w, v, sam.rho, sam.adaptive)
    g1w, g1v = grad(w + ew, v + ev)
    s = 1.0 if sam.sign == "min" else -1.0
    if release:
        return g0w + s * sam.lamb * (MW * g1w - g0w), g0v + s * sam.lamb * (MV * g1v - g0v)
    return MW * (g0w + s * sam.lamb * (g1w - g0w)), MV * (g0v + s * sam.lamb * (g1v - g0v))


def mask(release=False):
    m = {"w": torch.tensor(MW), "v": torch.tensor(MV)}
    return ReleaseMask(m) if release else m


def close(t, a):
    np.testing.assert_allclose(t.detach().numpy(), a, rtol=1e-10, atol=1e-13)


SAMS = [SamConfig("min", rho=0.3, lamb=1.0), SamConfig("max", rho=0.3, lamb=1.0),
        SamConfig("max", rho=0.7, lamb=0.3, adaptive=True), SamConfig("min", rho=1.0, lamb=1.0, adaptive=True)]


@pytest.mark.parametrize("sam", SAMS, ids=lambda s: s.tag())
def test_perturbation_uses_the_full_gradient_norm(sam):
    """The perturbed pass sees w + e with e over ALL entries (masked-out ones too), for both kinds."""
    for release in (False, True):
        m = Quartic()
        seen = []

        def closure():
            seen.append((m.w.detach().numpy().copy(), m.v.detach().numpy().copy()))
            return m.loss()

        opt = make_optimizer(m.parameters(), "sgd", lr=LR, momentum=0.0, weight_decay=0.0, sam=sam)
        optimizer_step(m, opt, closure, trainable=mask(release))
        ew, ev = perturbation(W0, V0, sam.rho, sam.adaptive)
        np.testing.assert_allclose(seen[1][0], W0 + ew, rtol=1e-12)
        np.testing.assert_allclose(seen[1][1], V0 + ev, rtol=1e-12)
        assert ew[1] != 0 and ev[0] != 0  # the masked-out entries are perturbed as well
        # the norm of the masked gradient only (the old behaviour) would give another point
        g0w, g0v = grad(W0, V0)
        aw, av = (np.abs(W0), np.abs(V0)) if sam.adaptive else (1.0, 1.0)
        masked_norm = np.sqrt(((MW * aw * g0w) ** 2).sum() + ((MV * av * g0v) ** 2).sum())
        assert not np.allclose(seen[1][0][0], W0[0] + sam.rho * (aw * aw * g0w)[0] / masked_norm)


@pytest.mark.parametrize("sam", SAMS, ids=lambda s: s.tag())
def test_hard_mask_sgd_momentum_weight_decay_by_hand(sam):
    """Three steps of SAM(SGD, momentum, weight decay): masked-in entries follow the hand-computed
    SAM update (momentum over their own final gradients); masked-out entries never move."""
    m = Quartic()
    opt = make_optimizer(m.parameters(), "sgd", lr=LR, momentum=MOM, weight_decay=WD, sam=sam)
    w, v = W0.copy(), V0.copy()
    buf = None
    for _ in range(3):
        gw, gv = final_grad(w, v, sam, release=False)
        dw, dv = gw + WD * w, gv + WD * v
        buf = (dw, dv) if buf is None else (MOM * buf[0] + dw, MOM * buf[1] + dv)
        w = np.where(MW, w - LR * buf[0], w)
        v = np.where(MV, v - LR * buf[1], v)
        optimizer_step(m, opt, m.loss, trainable=mask())
        close(m.w, w)
        close(m.v, v)
    assert m.w[1].item() == W0[1] and m.v[0].item() == V0[0]  # bitwise: the float64 values themselves
    assert m.w[0].item() != W0[0] and m.v[1].item() != V0[1]


def adamw_by_hand(p, g, state, lr=LR, wd=WD, b1=0.9, b2=0.999, eps=1e-8):
    """One torch AdamW step on a numpy array (decoupled decay, bias-corrected moments)."""
    t = state.get("t", 0) + 1
    m = b1 * state.get("m", 0.0) + (1 - b1) * g
    v = b2 * state.get("v", 0.0) + (1 - b2) * g * g
    state.update(t=t, m=m, v=v)
    p = p * (1 - lr * wd)
    return p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)


@pytest.mark.parametrize("sam", SAMS[:3], ids=lambda s: s.tag())
@pytest.mark.parametrize("release", [False, True], ids=["hard", "release"])
def test_sam_adamw_by_hand(sam, release):
    """SAM(AdamW), three steps. Hard: masked-in entries = hand AdamW on M * g, masked-out bitwise
    unchanged. Release: every entry = hand AdamW on g0 + s lamb (M g1 - g0), weight decay included."""
    m = Quartic()
    opt = make_optimizer(m.parameters(), "adamw", lr=LR, weight_decay=WD, sam=sam)
    w, v = W0.copy(), V0.copy()
    sw, sv = {}, {}
    for _ in range(3):
        gw, gv = final_grad(w, v, sam, release)
        nw, nv = adamw_by_hand(w, gw, sw), adamw_by_hand(v, gv, sv)
        w, v = (nw, nv) if release else (np.where(MW, nw, w), np.where(MV, nv, v))
        optimizer_step(m, opt, m.loss, trainable=mask(release))
        close(m.w, w)
        close(m.v, v)
    if release:  # the masked-out entries moved: decay, and under max the (1 + lamb) g0 leak
        assert m.w[1].item() != W0[1] and m.v[0].item() != V0[0]
    else:
        assert m.w[1].item() == W0[1] and m.v[0].item() == V0[0]


def test_release_min_lamb1_moves_masked_weights_only_by_weight_decay():
    """min, lamb = 1: g = M g1, so a masked-out entry gets g = 0 every step: Adam's moments stay 0
    and only the decoupled decay moves it, w <- w (1 - lr wd)^t."""
    m = Quartic()
    opt = make_optimizer(m.parameters(), "adamw", lr=LR, weight_decay=WD, sam=SamConfig("min", rho=0.3))
    for _ in range(4):
        optimizer_step(m, opt, m.loss, trainable=mask(release=True))
    np.testing.assert_allclose(m.w[1].item(), W0[1] * (1 - LR * WD) ** 4, rtol=1e-12)
    np.testing.assert_allclose(m.v[0].item(), V0[0] * (1 - LR * WD) ** 4, rtol=1e-12)


@pytest.mark.parametrize("release", [False, True], ids=["hard", "release"])
def test_plain_step_masks_the_gradient(release):
    """Without SAM both kinds step on M * g; only the release lets weight decay move masked entries."""
    m = Quartic()
    opt = make_optimizer(m.parameters(), "adamw", lr=LR, weight_decay=WD)
    optimizer_step(m, opt, m.loss, trainable=mask(release))
    gw, gv = grad(W0, V0)
    nw, nv = adamw_by_hand(W0, MW * gw, {}), adamw_by_hand(V0, MV * gv, {})
    if release:
        close(m.w, nw)
        close(m.v, nv)
        np.testing.assert_allclose(m.w[1].item(), W0[1] * (1 - LR * WD), rtol=1e-14)
    else:
        close(m.w, np.where(MW, nw, W0))
        close(m.v, np.where(MV, nv, V0))
