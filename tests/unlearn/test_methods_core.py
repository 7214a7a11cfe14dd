"""Core unlearning methods (noop, retrain, FT, GA, NG, Sharp MinMax) on tiny synthetic data."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trainer.step
import unlearn.neggrad_plus as ngp
from trainer.evaluate import predict
from trainer.fit import Recipe
from trainer.optim import SamConfig
from unlearn import get_method
from unlearn.base import UnlearnConfig, make_unlearn_optimizer
from unlearn.config import method_tag as _method_tag
from utils.paths import model_name_of
from utils.batches import Batch

from helpers import (TOY_FORGET as FORGET, TOY_RETAIN as RETAIN,
                     toy_data as _data, toy_model as _model, toy_task as _task)


def _ce(model, data, ids):
    logits, labels = predict(model, data.x, data.y, ids)
    return float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)))


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _batch(data, ids):
    ids = torch.as_tensor(ids)
    return Batch(data.x[ids].float() / 255, data.y[ids], ids)


def _half_mask(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()}


# ---------------------------------------------------------------------------------------------
# NG formula
# ---------------------------------------------------------------------------------------------

class _Fixed(nn.Module):
    """Returns hand-chosen logits per example id (stored in x[:, 0, 0, 0])."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].long()]


def test_ng_loss_is_alpha_ce_retain_minus_one_minus_alpha_ce_forget():
    table = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 1.0], [0.0, 0.0, 0.0]]
    model = _Fixed(table)
    xr = torch.zeros(2, 1, 1, 1)
    xr[:, 0, 0, 0] = torch.tensor([0.0, 1.0])
    xf = torch.zeros(2, 1, 1, 1)
    xf[:, 0, 0, 0] = torch.tensor([2.0, 3.0])
    br = Batch(xr, torch.tensor([0, 2]), torch.tensor([0, 1]))
    bf = Batch(xf, torch.tensor([1, 0]), torch.tensor([2, 3]))

    def ce(row, y):  # -log softmax(row)[y], by hand
        row = np.asarray(row)
        return float(np.log(np.exp(row).sum()) - row[y])

    ce_r = (ce(table[0], 0) + ce(table[1], 2)) / 2
    ce_f = (ce(table[2], 1) + ce(table[3], 0)) / 2
    for alpha in (0.99, 0.5, 0.9):
        loss, out = ngp.ng_loss(model, br, bf, alpha)
        assert loss.item() == pytest.approx(alpha * ce_r - (1 - alpha) * ce_f, rel=1e-6)
        assert out.shape == (2, 3)


# ---------------------------------------------------------------------------------------------
# Sharp MinMax
# ---------------------------------------------------------------------------------------------

def test_minmax_step_equals_manual_masked_sgd_steps():
    data = _data()
    model = _model()
    mask = _half_mask(model)
    br, bf = _batch(data, RETAIN[:16]), _batch(data, FORGET[:8])
    alpha, lr, wd = 0.9, 0.05, 5e-4
    cfg = UnlearnConfig(lr=lr, momentum=0.9, weight_decay=wd)
    ref = copy.deepcopy(model)
    opt_r, _ = make_unlearn_optimizer(model.parameters(), cfg)
    opt_f, _ = make_unlearn_optimizer(model.parameters(), cfg)
    ngp.minmax_step(model, opt_r, opt_f, br, bf, alpha, mask)

    # by hand: first SGD step with momentum is p -= lr * (g + wd * p); each sub-step on its part
    for weight, batch, part in ((alpha, br, lambda m: ~m), (-(1 - alpha), bf, lambda m: m)):
        ref.zero_grad()
        (weight * F.cross_entropy(ref(batch.x), batch.y)).backward()
        with torch.no_grad():
            for n, p in ref.named_parameters():
                upd = p - lr * (p.grad + wd * p)
                p.copy_(torch.where(part(mask[n]), upd, p))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, dict(ref.named_parameters())[n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("signs", [("min", "max"), ("max", "min"), ("min", "min")])
def test_sharp_minmax_partition_per_substep(monkeypatch, signs):
    """With SAM, momentum and weight decay, the retain sub-step moves only non-salient weights and
    the forget sub-step only salient ones (bitwise), over a whole NG epoch."""
    data = _data()
    model = _model("cnn_s")
    mask = _half_mask(model, 1)
    snaps = []
    real_step = trainer.step.optimizer_step

    def spy(m, opt, closure, *, trainable=None):
        before = _params(m)
        out = real_step(m, opt, closure, trainable=trainable)
        snaps.append((before, _params(m), trainable))
        return out

    monkeypatch.setattr(ngp, "optimizer_step", spy)
    cfg = UnlearnConfig(lr=0.05, epochs=2, batch_size=8, sam=SamConfig("min", rho=0.5, lamb=1.0, adaptive=True),
                        separate=signs, mask=mask, alpha=0.9)
    get_method("NG")(_task(model, data), cfg)
    assert len(snaps) == 2 * 2 * int(np.ceil(len(RETAIN) / 8))
    for i, (before, after, trainable) in enumerate(snaps):
        salient_step = i % 2 == 1  # retain sub-step first, then forget
        moved_any = False
        for n in before:
            frozen = ~mask[n] if salient_step else mask[n]
            assert torch.equal(before[n][frozen], after[n][frozen]), (i, n)
            moved_any |= not torch.equal(before[n], after[n])
        assert moved_any
        # the trainable part handed to the step is exactly the mask (forget) or its complement
        for n, t in trainable.items():
            assert torch.equal(t.bool(), mask[n] if salient_step else ~mask[n])


def test_sharp_minmax_needs_mask():
    data = _data()
    with pytest.raises(ValueError, match="mask"):
        get_method("NG")(_task(_model(), data), UnlearnConfig(epochs=1, batch_size=8, separate=("min", "max")))


def test_ng_epoch_is_one_pass_over_retain_and_cycles_forget(monkeypatch):
    data = _data()
    seen_r, seen_f = [], []
    real = ngp.ng_loss

    def spy(model, br, bf, alpha, device="cpu", precision="fp32", **kw):
        seen_r.append(br.ids.tolist())
        seen_f.append(bf.ids.tolist())
        return real(model, br, bf, alpha, device, precision, **kw)

    monkeypatch.setattr(ngp, "ng_loss", spy)
    get_method("NG")(_task(_model(), data), UnlearnConfig(epochs=1, batch_size=4, alpha=0.99))
    # 36 retain examples / 4 = 9 steps; the 12 forget examples (3 batches) are drawn 3 times
    assert len(seen_r) == 9 and sorted(sum(seen_r, [])) == RETAIN.tolist()
    flat_f = sum(seen_f, [])
    assert len(flat_f) == 36
    for k in range(3):
        assert sorted(flat_f[12 * k:12 * (k + 1)]) == FORGET.tolist()
    assert flat_f[:12] != flat_f[12:24] or flat_f[12:24] != flat_f[24:]  # reshuffled per pass


def test_ng_with_mask_keeps_masked_weights():
    data = _data()
    model = _model()
    mask = _half_mask(model, 2)
    before = _params(model)
    get_method("NG")(_task(model, data), UnlearnConfig(lr=0.1, epochs=1, batch_size=8, mask=mask,
                                                       sam=SamConfig("max", rho=0.1)))
    after = _params(model)
    for n in before:
        assert torch.equal(before[n][~mask[n]], after[n][~mask[n]])
        assert not torch.equal(before[n][mask[n]], after[n][mask[n]])


# ---------------------------------------------------------------------------------------------
# GA, FT, noop, retrain
# ---------------------------------------------------------------------------------------------

def test_ga_increases_forget_loss():
    data = _data()
    model = _model()
    before = _ce(model, data, FORGET)
    get_method("GA")(_task(model, data), UnlearnConfig(lr=0.05, epochs=3, batch_size=4, augment=False))
    assert _ce(model, data, FORGET) > before + 0.05


def test_ft_decreases_retain_loss_and_honours_mask_and_sam():
    data = _data()
    model = _model()
    before = _ce(model, data, RETAIN)
    get_method("FT")(_task(model, data), UnlearnConfig(lr=0.05, epochs=5, batch_size=8, augment=False))
    assert _ce(model, data, RETAIN) < before
    model = _model()
    mask = _half_mask(model, 3)
    p0 = _params(model)
    get_method("FT")(_task(model, data), UnlearnConfig(lr=0.05, epochs=1, batch_size=8, mask=mask,
                                                       sam=SamConfig("min", rho=0.2, adaptive=True)))
    p1 = _params(model)
    for n in p0:
        assert torch.equal(p0[n][~mask[n]], p1[n][~mask[n]])


def test_noop_changes_nothing():
    data = _data()
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name in ("raw", "original"):
        get_method(name)(_task(model, data), UnlearnConfig())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_retrain_trains_on_retain_only(monkeypatch):
    import trainer.fit

    data = _data()
    model = _model()
    seen = []
    real = trainer.fit.train_epoch

    def spy(m, opt, batches, **kw):
        def gen():
            for b in batches:
                seen.extend(b.ids.tolist())
                yield b
        return real(m, opt, gen(), **kw)

    monkeypatch.setattr(trainer.fit, "train_epoch", spy)
    before = _ce(model, data, RETAIN)
    cfg = UnlearnConfig(recipe=Recipe(epochs=4, lr=0.05, batch_size=8, augment=False))
    get_method("retrain")(_task(model, data), cfg)
    assert sorted(set(seen)) == RETAIN.tolist() and len(seen) == 4 * len(RETAIN)
    assert _ce(model, data, RETAIN) < before


# ---------------------------------------------------------------------------------------------
# naming
# ---------------------------------------------------------------------------------------------

def _ns(**kw):
    from arg_parser import parse_args

    argv = []
    for k, v in kw.items():
        argv += [f"--{k}"] + ([] if v is True else (v if isinstance(v, list) else [str(v)]))
    return parse_args(argv)


def method_tag(args):
    from stages.configs import check_method, unlearn_config

    check_method(args)
    return _method_tag(args.unlearn, unlearn_config(args), args.path)


def test_method_tags():
    assert method_tag(_ns(unlearn="FT", unlearn_lr=0.01, unlearn_epochs=10)) == "FT_lr0.01_ep10_sgd"
    assert method_tag(_ns(unlearn="retrain", unlearn_lr=0.1, unlearn_epochs=30)) == "retrain_lr0.1_ep30"
    assert method_tag(_ns(unlearn="original")) == "original"
    assert method_tag(_ns(unlearn="wfisher", alpha=5)) == "wfisher_alpha5"
    tag = method_tag(_ns(unlearn="NG", alpha=0.99, unlearn_lr=0.01, unlearn_epochs=5, sam="min", rho=1.0, lamb=1,
                         adaptive=True, separate=["min", "max"], path="masks/mask_largest_0.5.pt"))
    assert tag == "NG_alpha0.99_lr0.01_ep5_sgd_sam-min_rho1_lamb1_adaptive_sep-min-max_mask_largest_0.5"
    assert method_tag(_ns(unlearn="SCRUB", msteps=4, kd_T=4, beta=0.001, gamma=0.99, unlearn_lr=0.005,
                          unlearn_epochs=5)) == "SCRUB_msteps4_kdT4_beta0.001_gamma0.99_lr0.005_ep5_sgd"
    assert method_tag(_ns(unlearn="GA", batch_size=64, no_aug=True, unlearn_optimizer="adamw")) == \
        "GA_lr0.01_ep10_adamw_bs64_noaug"


def test_model_names(tmp_path):
    assert model_name_of(tmp_path / "digits_cnn_s_sgd_ep8" / "model.pt") == "digits_cnn_s_sgd_ep8"
    assert model_name_of(tmp_path / "0cifar100_original_resnet50_bs256.pth.tar") == "0cifar100_original_resnet50_bs256"
