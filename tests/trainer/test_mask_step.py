"""A parameter mask is a hard constraint (DESIGN.md §5, §7.6): through trainer.step.optimizer_step,
masked-out weights stay bitwise unchanged under SGD with momentum and weight decay, SAM (min, max,
adaptive) and AdamW, while the free weights move."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.mask import FrozenEntries, check_mask, complement, mask_grads_
from trainer.optim import SamConfig, make_optimizer
from trainer.step import optimizer_step


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 4))


def _mask(model, seed=1):
    """Random entry-wise masks for some tensors, one tensor fully frozen, one absent (= free)."""
    g = torch.Generator().manual_seed(seed)
    mask = {}
    for name, p in model.named_parameters():
        if name == "7.bias":
            continue  # not in the mask: free
        mask[name] = torch.rand(p.shape, generator=g) < 0.5
    mask["1.bias"] = torch.zeros_like(mask["1.bias"])  # a fully frozen tensor
    return mask


def _data(n=5):
    g = torch.Generator().manual_seed(2)
    return [(torch.rand(12, 3, 5, 5, generator=g), torch.randint(0, 4, (12,), generator=g)) for _ in range(n)]


OPTIMIZERS = {
    "sgd": dict(kind="sgd", sam=None),
    "sam-min": dict(kind="sgd", sam=SamConfig("min", rho=0.5, lamb=1.0)),
    "sam-max": dict(kind="sgd", sam=SamConfig("max", rho=0.5, lamb=1.0)),
    "sam-min-adaptive": dict(kind="sgd", sam=SamConfig("min", rho=2.0, lamb=0.7, adaptive=True)),
    "sam-max-lamb": dict(kind="sgd", sam=SamConfig("max", rho=0.5, lamb=0.3)),
    "adamw": dict(kind="adamw", sam=None),
    "adamw-sam": dict(kind="adamw", sam=SamConfig("min", rho=0.5)),
}


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_masked_weights_never_move(opt_name):
    model = _net()
    mask = _mask(model)
    check_mask(model, mask)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    spec = OPTIMIZERS[opt_name]
    lr = 0.01 if spec["kind"] == "adamw" else 0.1
    opt = make_optimizer(model.parameters(), spec["kind"], lr=lr, momentum=0.9, weight_decay=5e-4, sam=spec["sam"])
    for x, y in _data():
        optimizer_step(model, opt, lambda: nn.functional.cross_entropy(model(x), y), trainable=mask)
    moved_free, n_free = 0, 0
    for name, p in model.named_parameters():
        m = mask.get(name, torch.ones_like(p, dtype=torch.bool))
        frozen = ~m
        assert torch.equal(p.detach()[frozen], before[name][frozen]), f"{name}: a masked weight moved"
        moved_free += int((p.detach()[m] != before[name][m]).sum())
        n_free += int(m.sum())
    assert moved_free == n_free, f"{n_free - moved_free} of {n_free} free weights did not move"
    # the momentum / Adam state may hold anything for frozen entries; a later step still keeps them
    x, y = _data(1)[0]
    optimizer_step(model, opt, lambda: nn.functional.cross_entropy(model(x), y), trainable=mask)
    assert torch.equal(model[1].bias.detach(), before["1.bias"])


def test_no_mask_everything_moves_and_mask_of_ones_is_no_mask():
    a, b = _net(), _net()
    ones = {k: torch.ones_like(p, dtype=torch.bool) for k, p in b.named_parameters()}
    kw = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, sam=SamConfig("min", rho=0.3))
    oa = make_optimizer(a.parameters(), "sgd", **kw)
    ob = make_optimizer(b.parameters(), "sgd", **kw)
    for x, y in _data(3):
        optimizer_step(a, oa, lambda: nn.functional.cross_entropy(a(x), y))
        optimizer_step(b, ob, lambda: nn.functional.cross_entropy(b(x), y), trainable=ones)
    for (k, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), k


def test_sam_perturbs_all_entries_and_masks_the_final_gradient():
    """The SAM perturbation comes from the unmasked gradient over ALL weights (as the original); the
    mask applies to the final gradient only: the perturbed forward sees the masked-out entries
    moved, the step leaves them where they were."""
    model = _net()
    mask = _mask(model)
    ref = _net()
    opt = make_optimizer(model.parameters(), "sgd", lr=0.1, sam=SamConfig("min", rho=5.0))
    x, y = _data(1)[0]
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    seen = []

    def closure():
        seen.append({k: v.detach().clone() for k, v in model.named_parameters()})
        return nn.functional.cross_entropy(model(x), y)

    optimizer_step(model, opt, closure, trainable=mask)
    # e = rho g0 / ||g0|| with g0 the unmasked clean gradient of every parameter
    nn.functional.cross_entropy(ref(x), y).backward()
    g0 = {k: p.grad for k, p in ref.named_parameters()}
    norm = torch.stack([g.norm() for g in g0.values()]).norm()
    for k, p0 in start.items():
        torch.testing.assert_close(seen[1][k], p0 + 5.0 * g0[k] / (norm + 1e-12), rtol=1e-5, atol=1e-6)
    perturbed = seen[1]
    assert any(not torch.equal(perturbed[k][~m], start[k][~m]) for k, m in mask.items())
    for k, p in model.named_parameters():
        m = mask.get(k, torch.ones_like(p, dtype=torch.bool))
        assert torch.equal(p.detach()[~m], start[k][~m]), k


def test_mask_helpers():
    model = _net()
    mask = _mask(model)
    comp = complement(mask)
    assert all(torch.equal(comp[k], ~mask[k]) for k in mask)
    with pytest.raises(ValueError, match="nope"):
        check_mask(model, {"nope": torch.ones(1, dtype=torch.bool)})
    with pytest.raises(ValueError, match="0.weight"):
        check_mask(model, {"0.weight": torch.ones(3, dtype=torch.bool)})
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    mask_grads_(model, mask)
    for name, p in model.named_parameters():
        expected = mask[name].float() if name in mask else torch.ones_like(p)
        assert torch.equal(p.grad, expected), name
    frozen = FrozenEntries(model, mask)
    old = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    frozen.restore()
    m = mask["0.weight"]
    assert torch.equal(model[0].weight[~m], old[~m]) and torch.equal(model[0].weight[m], old[m] + 1)
