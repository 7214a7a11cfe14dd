"""RL_og (unlearn/random_label.py) and SalUn = RL (unlearn/salun.py) on tiny synthetic data."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import build_model
from trainer.evaluate import predict
from trainer.optim import SamConfig
from unlearn import get_method
from unlearn.base import UnlearnConfig, UnlearnTask
from unlearn.random_label import random_labels, relabelled_epoch_set
from utils.data import ImageData

C = 4
N = 96


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (N, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, C, (N,), generator=g)
    return ImageData("digits", x, y, x[:8].clone(), y[:8].clone(), C, np.arange(N, dtype=np.int64),
                     np.zeros(0, np.int64), mean=(0.5,), std=(0.25,))


_FITTED: dict = {}


def _memorizing_mlp(data):
    """An mlp that fits all N random examples (100% train accuracy); trained once, then copied."""
    model = build_model("mlp", C, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,))
    if "state" not in _FITTED:
        torch.manual_seed(0)
        fresh = build_model("mlp", C, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,))
        opt = torch.optim.Adam(fresh.parameters(), 1e-3)
        for _ in range(200):
            opt.zero_grad()
            F.cross_entropy(fresh(data.x.float() / 255), data.y).backward()
            opt.step()
        _FITTED["state"] = {k: v.detach().clone() for k, v in fresh.state_dict().items()}
    model.load_state_dict(_FITTED["state"])
    return model


FORGET = np.arange(0, N, 6, dtype=np.int64)  # 16 examples
RETAIN = np.setdiff1d(np.arange(N), FORGET)


def _task(model, data, seed=0):
    return UnlearnTask(model, data, FORGET, RETAIN, torch.device("cpu"), seed,
                       torch.Generator().manual_seed(seed))


def _acc(model, data, ids):
    logits, labels = predict(model, data.x, data.y, ids)
    return float((logits.argmax(1) == labels).mean()), logits.argmax(1)


def test_random_labels_uniform_over_all_classes():
    lab = random_labels(40000, 10, torch.Generator().manual_seed(0))
    assert lab.dtype == torch.int64 and lab.min() == 0 and lab.max() == 9
    counts = torch.bincount(lab, minlength=10).double()
    # every class, the true one included, has probability 1/10: chi-square with 9 dof
    chi2 = float(((counts - 4000) ** 2 / 4000).sum())
    assert chi2 < 30, counts


def test_epoch_set_relabels_forget_only_and_may_draw_the_true_label():
    data = _data()
    task = _task(None, data)
    ids, labels = relabelled_epoch_set(task)
    assert ids.tolist() == FORGET.tolist() + RETAIN.tolist()
    assert torch.equal(labels[len(FORGET):], data.y[RETAIN])
    # fresh labels each call; over many draws a forget label equals the true one ~1/C of the time
    same, draws = 0, 0
    seen = set()
    for _ in range(200):
        _, labels = relabelled_epoch_set(task)
        f = labels[:len(FORGET)]
        same += int((f == data.y[FORGET]).sum())
        draws += len(f)
        seen |= set(f.tolist())
    assert seen == set(range(C))
    assert abs(same / draws - 1 / C) < 0.05


def test_rl_og_changes_forget_predictions_and_keeps_retain():
    data = _data()
    model = _memorizing_mlp(data)
    acc_f0, pred0 = _acc(model, data, FORGET)
    assert acc_f0 == 1.0
    get_method("RL_og")(_task(model, data), UnlearnConfig(lr=0.05, epochs=5, batch_size=32, augment=False))
    acc_f, pred = _acc(model, data, FORGET)
    acc_r, _ = _acc(model, data, RETAIN)
    assert acc_f <= 0.6, acc_f
    assert (pred != pred0).mean() >= 0.4
    assert acc_r >= 0.9, acc_r


def test_rl_og_is_deterministic_given_the_generator():
    data = _data()
    states = []
    for _ in range(2):
        model = _memorizing_mlp(data)
        get_method("RL_og")(_task(model, data, seed=3), UnlearnConfig(lr=0.05, epochs=2, batch_size=32))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k])


def _random_mask(model, frac=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < frac for n, p in model.named_parameters()}


@pytest.mark.parametrize("opt,sam", [("sgd", None), ("adamw", None),
                                     ("sgd", SamConfig(sign="min", rho=0.5, adaptive=True)),
                                     ("sgd", SamConfig(sign="max", rho=0.1))])
def test_salun_keeps_masked_out_weights_bitwise(opt, sam):
    data = _data()
    model = _memorizing_mlp(data)
    mask = _random_mask(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = UnlearnConfig(lr=0.05, epochs=2, batch_size=32, optimizer=opt, sam=sam, mask=mask, weight_decay=5e-3)
    get_method("RL")(_task(model, data), cfg)
    moved = 0
    for n, p in model.named_parameters():
        frozen = ~mask[n]
        assert torch.equal(p.detach()[frozen], before[n][frozen]), n
        moved += int((p.detach()[mask[n]] != before[n][mask[n]]).sum())
    assert moved > 0


def test_rl_og_honours_a_mask_and_salun_equals_rl_og_with_the_mask():
    data = _data()
    results = []
    for name in ("RL_og", "RL"):
        model = _memorizing_mlp(data)
        mask = _random_mask(model, 0.3)
        get_method(name)(_task(model, data), UnlearnConfig(lr=0.05, epochs=2, batch_size=32, mask=mask))
        results.append({k: v.clone() for k, v in model.state_dict().items()})
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k])


def test_salun_without_a_mask_raises():
    data = _data()
    model = _memorizing_mlp(data)
    with pytest.raises(ValueError, match="--path"):
        get_method("RL")(_task(model, data), UnlearnConfig(epochs=1))


def test_mask_of_another_model_raises():
    data = _data()
    model = _memorizing_mlp(data)
    with pytest.raises(ValueError, match="fc.weight"):
        get_method("RL")(_task(model, data), UnlearnConfig(epochs=1, mask={"fc.weight": torch.ones(3, 3, dtype=torch.bool)}))
