"""L1-sparse (FT_l1/FT_prune), SCRUB and wfisher (upstream-spec §5.9): loss formulas by hand,
the WoodFisher recursion against explicit matrices, masks as hard constraints. Tiny and fast."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unlearn.scrub as scrub
import unlearn.wfisher as wf
from models import build_model
from trainer.optim import SamConfig
from unlearn import get_method
from unlearn.base import UnlearnConfig, UnlearnTask
from unlearn.l1_sparse import conv_sparsity
from unlearn.losses import distill_kl, l1_coefficient, l1_norm
from utils.data import ImageData

CLASSES = 3


def _data(n: int = 40, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return ImageData("digits", x, y, x[:8].clone(), y[:8].clone(), CLASSES, np.arange(n, dtype=np.int64),
                     np.zeros(0, dtype=np.int64), mean=(0.3,), std=(0.35,))


def _model(arch: str = "mlp", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, CLASSES, in_channels=1, image_size=8, mean=(0.3,), std=(0.35,))


def _task(model: nn.Module, data: ImageData | None = None, n_forget: int = 8, seed: int = 0) -> UnlearnTask:
    data = data if data is not None else _data()
    ids = data.train_ids
    return UnlearnTask(model=model, data=data, forget_ids=ids[:n_forget], retain_ids=ids[n_forget:],
                       device=torch.device("cpu"), seed=seed, generator=torch.Generator().manual_seed(seed))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def _half_mask(model: nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()}


def test_registry_points_here():
    import unlearn.l1_sparse as l1

    assert get_method("FT_l1") is l1.unlearn and get_method("FT_prune") is l1.unlearn
    assert get_method("SCRUB") is scrub.unlearn and get_method("wfisher") is wf.unlearn


# --- losses --------------------------------------------------------------------------------------

def test_l1_coefficient_schedule():
    got = [l1_coefficient(e, 4, 1, 0.5) for e in range(4)]
    assert got == pytest.approx([0.5, 1 / 3, 1 / 6, 0.0])  # 0.5 * (1 - e/3), then 0
    assert [l1_coefficient(e, 4, 0, 1.0) for e in range(4)] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert [l1_coefficient(e, 2, 2, 1.0) for e in range(2)] == [0.0, 0.0]  # empty L1 window


def test_l1_norm_all_parameters():
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for i, p in enumerate(m.parameters()):
            p.copy_(torch.arange(p.numel(), dtype=torch.float32).view_as(p) - i)
    # weights [[0,1],[2,3]] -> 6; bias [-1,0] -> 1; bn weight [-2,-1] -> 3; bn bias [-3,-2] -> 5
    assert float(l1_norm(m).detach()) == pytest.approx(15.0)


def test_distill_kl_by_hand():
    s = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
    t = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]])
    T = 2.0
    total = 0.0
    for si, ti in zip(s.tolist(), t.tolist()):
        zs = sum(math.exp(v / T) for v in si)
        zt = sum(math.exp(v / T) for v in ti)
        for a, b in zip(si, ti):
            pt = math.exp(b / T) / zt
            total += pt * (math.log(pt) - math.log(math.exp(a / T) / zs))
    expected = T * T * total / 2  # T^2, sum over classes and batch, divided by B = 2
    assert float(distill_kl(s, t, T)) == pytest.approx(expected, rel=1e-6)
    ref = T ** 2 * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
    assert float(distill_kl(s, t, T)) == pytest.approx(float(ref), rel=1e-6)
    assert float(distill_kl(t, t, T)) == pytest.approx(0.0, abs=1e-7)


# --- L1-sparse -----------------------------------------------------------------------------------

def _run_l1(alpha: float, **kw) -> nn.Module:
    model = _model()
    cfg = UnlearnConfig(lr=0.05, epochs=2, batch_size=16, alpha=alpha, **kw)
    get_method("FT_prune")(_task(model), cfg)
    return model


def test_l1_sparse_shrinks_l1_norm_versus_plain_ft(capsys):
    start = float(l1_norm(_model()).detach())
    plain, sparse = _run_l1(0.0), _run_l1(0.01)  # alpha = 0 is plain FT: same batches, same init
    assert float(l1_norm(sparse).detach()) < float(l1_norm(plain).detach())
    assert float(l1_norm(sparse).detach()) < start
    assert "conv-weight sparsity" in capsys.readouterr().out


def test_l1_sparse_sam_and_mask():
    model = _model()
    before = _state(model)
    mask = _half_mask(model)
    cfg = UnlearnConfig(lr=0.05, epochs=1, batch_size=16, alpha=0.01, mask=mask,
                        sam=SamConfig(sign="max", rho=0.05, lamb=1.0))
    get_method("FT_l1")(_task(model), cfg)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach()[~mask[n]], before[n][~mask[n]]), n
    assert _changed(before, _state(model))


def test_conv_sparsity():
    m = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Linear(2, 2))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1))
    assert conv_sparsity(m) == 0.5
    assert conv_sparsity(nn.Linear(2, 2)) is None


# --- SCRUB ---------------------------------------------------------------------------------------

def test_scrub_defaults():
    assert scrub.resolve(UnlearnConfig()) == (4, 4.0, 0.99, 0.001)
    assert scrub.resolve(UnlearnConfig(msteps=2, kd_T=1.0, gamma=0.5, beta=0.1)) == (2, 1.0, 0.5, 0.1)


def test_scrub_changes_model_and_runs_msteps_plus_one_max_passes(monkeypatch):
    calls: list[str] = []
    real = scrub.distill_pass

    def counting(*a, mode, **kw):
        calls.append(mode)
        return real(*a, mode=mode, **kw)

    monkeypatch.setattr(scrub, "distill_pass", counting)
    model = _model()
    before = _state(model)
    cfg = UnlearnConfig(lr=0.01, epochs=4, batch_size=16, msteps=1, kd_T=4.0, gamma=0.99, beta=0.001)
    get_method("SCRUB")(_task(model), cfg)
    # epochs 0 and 1 (e <= msteps): max then min; epochs 2 and 3: min only
    assert calls == ["max", "min", "max", "min", "min", "min"]
    assert _changed(before, _state(model))
    assert model.training


def test_scrub_max_pass_increases_kl_and_teacher_is_frozen():
    model = _model()
    teacher = _model()  # same seed: identical weights
    # At student == teacher the KL is at its minimum and its gradient is exactly zero (for a model
    # without BatchNorm/dropout the first max step of SCRUB does not move it): start nearby instead.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    task = _task(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    from unlearn.base import batches

    x = task.data.x[task.forget_ids].float() / 255
    cfg = UnlearnConfig(batch_size=8, augment=False)
    t_before = _state(teacher)

    def kl() -> float:
        with torch.no_grad():
            return float(distill_kl(model(x), teacher(x), 4.0))

    kl0 = kl()
    for _ in range(3):
        scrub.distill_pass(model, teacher, opt, batches(task, task.forget_ids, cfg), mode="max", kd_T=4.0)
    assert kl() > kl0 > 0
    assert not _changed(t_before, _state(teacher))


def test_scrub_sam_with_mask():
    model = _model()
    before = _state(model)
    mask = _half_mask(model)
    cfg = UnlearnConfig(lr=0.01, epochs=1, batch_size=16, msteps=0, mask=mask, sam=SamConfig(rho=0.05))
    get_method("SCRUB")(_task(model), cfg)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach()[~mask[n]], before[n][~mask[n]]), n
    assert _changed(before, _state(model))


# --- wfisher -------------------------------------------------------------------------------------

def test_woodfisher_recursion_is_an_explicit_rank_one_solve():
    """On a Linear 3->2 (8 parameters) with real per-sample gradients: the recursion equals
    (I + g0 S^T / N_w)^{-1} v with S = g_1 + ... + g_{T-1}, solved with explicit matrices; it is NOT
    the textbook inverse-empirical-Fisher product (I + (1/N_w) sum_t g_t g_t^T)^{-1} v."""
    torch.manual_seed(0)
    lin = nn.Linear(3, 2).double()
    x = torch.randn(9, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (9,))
    G = wf.per_sample_grads_loop(lin, x, y)  # [9, 8]
    assert G.shape == (9, 8)
    forget, retain = G[:3], G[3:]
    n_f, n_r = 3, 6
    n = n_f + n_r
    v = forget.sum(0) / n - retain.sum(0) * n_f / (n * n_r)
    n_w = 0.5  # small, so that the correction is large
    k = wf.woodfisher_ihvp(v, retain, n_w)

    Gn, vn = retain.numpy(), v.numpy()
    A = np.eye(8) + np.outer(Gn[0], Gn[1:].sum(0)) / n_w
    np.testing.assert_allclose(k.numpy(), np.linalg.solve(A, vn), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(k.numpy(), wf.woodfisher_closed_form(v, retain[0], retain[1:].sum(0), n_w).numpy(),
                               rtol=1e-9, atol=1e-12)
    fisher = np.eye(8) + Gn.T @ Gn / n_w
    assert not np.allclose(k.numpy(), np.linalg.solve(fisher, vn), rtol=1e-3)
    # the result differs from v only along g0
    d = k.numpy() - vn
    assert np.linalg.matrix_rank(np.stack([d, Gn[0]]), tol=1e-9) == 1


def test_woodfisher_recursion_step_by_step_and_streaming():
    g = torch.Generator().manual_seed(1)
    G = torch.randn(7, 5, generator=g, dtype=torch.float64)
    v = torch.randn(5, generator=g, dtype=torch.float64)
    n_w = 3.0
    # the literal recursion of upstream-spec §5.9
    k, o = v.clone(), G[0].clone()
    for t in range(1, 7):
        tau = o @ G[t]
        k = k - (k @ G[t]) / (n_w + tau) * o
        o = o - tau / (n_w + tau) * o
    torch.testing.assert_close(wf.woodfisher_ihvp(v, G, n_w), k)
    torch.testing.assert_close(wf.woodfisher_ihvp(v, iter([G[:1], G[1:4], G[4:]]), n_w), k)
    torch.testing.assert_close(wf.woodfisher_ihvp(v, G[:1], n_w), v)  # one sample: k = v


@pytest.mark.parametrize("arch", ["mlp", "cnn_s"])
def test_per_sample_grads_vmap_equal_loop(arch):
    model = _model(arch).eval()
    data = _data(n=4)
    x, y = data.x.float() / 255, data.y
    a = wf.per_sample_grads_vmap(model, x, y)
    b = wf.per_sample_grads_loop(model, x, y)
    assert a.shape == (4, sum(p.numel() for p in model.parameters()))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_per_sample_grads_fallback_loop(monkeypatch, capsys):
    def broken(*a, **kw):
        raise RuntimeError("no vmap here")

    model = _model().eval()
    data = _data(n=3)
    x, y = data.x.float() / 255, data.y
    expected = wf.per_sample_grads_loop(model, x, y)
    monkeypatch.setattr(wf, "per_sample_grads_vmap", broken)
    torch.testing.assert_close(wf.per_sample_grads(model, x, y), expected)
    assert "per-sample backward loop" in capsys.readouterr().out


def test_wfisher_update_matches_explicit_computation(monkeypatch):
    monkeypatch.setattr(wf, "N_W", 2.0)
    monkeypatch.setattr(wf, "NUM_SAMPLES", 5)
    model = _model()
    task = _task(model, _data(n=20), n_forget=6)
    model.eval()
    x, y = task.data.x.float() / 255, task.data.y
    G = wf.per_sample_grads_loop(model, x, y).double()
    fg, rg = G[task.forget_ids], G[task.retain_ids]
    n_f, n_r = 6, 14
    v = fg.sum(0) / 20 - rg.sum(0) * n_f / (20 * n_r)
    k = wf.woodfisher_closed_form(v, rg[0], rg[1:5].sum(0), 2.0)
    alpha = 0.3
    expected = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double() + alpha * k
    model.train()
    wf.unlearn(task, UnlearnConfig(alpha=alpha, batch_size=7))
    got = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert model.training  # mode restored


def test_wfisher_mask_keeps_masked_entries_bitwise():
    model = _model()
    before = _state(model)
    mask = _half_mask(model)
    wf.unlearn(_task(model), UnlearnConfig(alpha=1.0, batch_size=16, mask=mask))
    moved = False
    for n, p in model.named_parameters():
        assert torch.equal(p.detach()[~mask[n]], before[n][~mask[n]]), n
        moved |= not torch.equal(p.detach()[mask[n]], before[n][mask[n]])
    assert moved
