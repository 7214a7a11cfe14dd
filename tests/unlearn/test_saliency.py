"""Saliency masks (unlearn/saliency.py): forget gradients, global ranking, mask files."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import build_model
from utils.data import ImageData
from utils.errors import UserError
from unlearn.saliency import (DEFAULT_RATIOS, forget_gradients, load_mask, mask_file_name, mask_fraction,
                            read_mask_file, saliency_masks, save_mask)

# Hand-built |G|: 7 entries. Flat positions (dict order, row-major):
#   a[0,0]=p0=3  a[0,1]=p1=1  a[1,0]=p2=2  a[1,1]=p3=2  b[0]=p4=1  b[1]=p5=5  b[2]=p6=0
GRADS = {"a": torch.tensor([[3.0, 1.0], [2.0, 2.0]]), "b": torch.tensor([1.0, 5.0, 0.0])}
# largest:  (value desc, position asc) -> p5, p0, p2, p3, p1, p4, p6
# smallest: (value asc,  position asc) -> p6, p1, p4, p2, p3, p0, p5
T, F_ = True, False
EXPECTED = {
    "largest": {
        0.3: ({"a": [[T, F_], [F_, F_]], "b": [F_, T, F_]}),        # k = int(2.1) = 2: p5, p0
        0.5: ({"a": [[T, F_], [T, F_]], "b": [F_, T, F_]}),         # k = 3: + p2 (tie 2: p2 before p3)
        0.6: ({"a": [[T, F_], [T, T]], "b": [F_, T, F_]}),          # k = 4: + p3
        0.75: ({"a": [[T, T], [T, T]], "b": [F_, T, F_]}),          # k = 5: + p1 (tie 1: p1 before p4)
    },
    "smallest": {
        0.3: ({"a": [[F_, T], [F_, F_]], "b": [F_, F_, T]}),        # p6, p1 (tie 1: p1 before p4)
        0.5: ({"a": [[F_, T], [F_, F_]], "b": [T, F_, T]}),         # + p4
        0.6: ({"a": [[F_, T], [T, F_]], "b": [T, F_, T]}),          # + p2 (tie 2: p2 before p3)
        0.75: ({"a": [[F_, T], [T, T]], "b": [T, F_, T]}),          # + p3
    },
}


@pytest.mark.parametrize("order", ["largest", "smallest"])
def test_hand_built_masks(order):
    masks = saliency_masks(GRADS, list(EXPECTED[order]) + [1.0], order)
    for q, exp in EXPECTED[order].items():
        got = masks[q]
        assert list(got) == ["a", "b"]
        for name in ("a", "b"):
            assert got[name].dtype == torch.bool
            assert got[name].tolist() == exp[name], (order, q, name)
        assert sum(int(m.sum()) for m in got.values()) == int(7 * q)
    assert all(bool(m.all()) for m in masks[1.0].values())  # ratio 1.0 marks everything


def test_small_ratio_may_mark_nothing_and_k_is_floor():
    # k = int(P * q): 7 * 0.1 = 0.7 -> 0 entries (the original's arithmetic)
    masks = saliency_masks(GRADS, [0.1, 0.2], "largest")
    assert mask_fraction(masks[0.1]) == 0.0
    assert sum(int(m.sum()) for m in masks[0.2].values()) == 1
    assert bool(masks[0.2]["b"][1]) is True


def test_all_ties_take_positions_in_order():
    g = {"w": torch.ones(2, 3), "v": torch.ones(4)}
    for order in ("largest", "smallest"):
        m = saliency_masks(g, [0.5, 0.8], order)
        # k = 5: the first five positions; k = 8: all of w, then v[0], v[1]
        assert m[0.5]["w"].tolist() == [[True, True, True], [True, True, False]] and not m[0.5]["v"].any()
        assert m[0.8]["w"].all() and m[0.8]["v"].tolist() == [True, True, False, False]


def test_random_masks_select_exactly_the_extremes():
    gen = torch.Generator().manual_seed(0)
    g = {"x": torch.rand(37, 5, generator=gen), "y": torch.rand(101, generator=gen).round(decimals=1)}
    vec = torch.cat([t.reshape(-1) for t in g.values()])
    for order in ("largest", "smallest"):
        masks = saliency_masks(g, [0.1, 0.35, 0.9], order)
        for q, m in masks.items():
            flat = torch.cat([t.reshape(-1) for t in m.values()])
            assert int(flat.sum()) == int(len(vec) * q)
            sel, rest = vec[flat], vec[~flat]
            if order == "largest":
                assert sel.min() >= rest.max()
            else:
                assert sel.max() <= rest.min()


@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -0.1, float("nan")])
def test_bad_ratio_is_a_user_error(bad):
    with pytest.raises(UserError, match="--mask_ratio"):
        saliency_masks(GRADS, [0.5, bad])


def test_default_ratios_and_file_names():
    assert DEFAULT_RATIOS == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert mask_file_name("largest", 0.3) == "mask_largest_0.3.pt"
    assert mask_file_name("smallest", 1.0) == "mask_smallest_1.0.pt"
    assert mask_file_name("largest", 0.25) == "mask_largest_0.25.pt"


# --- gradients ------------------------------------------------------------------------------

def _tiny_data(n=40, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, classes, (n,), generator=g)
    ids = np.arange(n, dtype=np.int64)
    return ImageData("digits", x, y, x[:8].clone(), y[:8].clone(), classes, ids, np.zeros(0, np.int64),
                     mean=(0.5,), std=(0.25,))


def _mlp(classes=3, seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", classes, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,))


def test_forget_gradients_sum_of_batch_mean_gradients():
    data = _tiny_data()
    model = _mlp()
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    forget = np.array([3, 17, 5, 22, 9, 30, 1], dtype=np.int64)
    got = forget_gradients(model, data, forget, "cpu", batch_size=3)
    # manual: batches [3,17,5], [22,9,30], [1] in forget-set order, -CE mean each, summed
    params = dict(model.named_parameters())
    exp = {n: torch.zeros_like(p) for n, p in params.items()}
    model.eval()
    for chunk in (forget[:3], forget[3:6], forget[6:]):
        x = data.x[chunk].float() / 255
        loss = -F.cross_entropy(model(x), data.y[chunk])
        for (n, _), gr in zip(params.items(), torch.autograd.grad(loss, list(params.values()))):
            exp[n] += gr
    assert list(got) == list(params)
    for n in params:
        assert got[n].device.type == "cpu" and got[n].dtype == torch.float32
        torch.testing.assert_close(got[n], exp[n].abs(), rtol=1e-5, atol=1e-7)
    # nothing about the model changed: weights, .grad, train mode
    model.train()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None


def test_forget_gradients_ignore_order_and_use_eval_mode():
    data = _tiny_data()
    torch.manual_seed(1)
    model = build_model("cnn_s", 3, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,))
    model.train()
    a = forget_gradients(model, data, np.arange(12), "cpu", batch_size=4)
    bn_mean = model.features[1].running_mean.clone()
    b = forget_gradients(model, data, np.arange(12), "cpu", batch_size=4)
    assert torch.equal(model.features[1].running_mean, bn_mean)  # eval mode: BN stats untouched
    assert model.training
    for n in a:
        assert torch.equal(a[n], b[n])


# --- files ----------------------------------------------------------------------------------

def test_save_and_load_mask_roundtrip(tmp_path):
    model = _mlp()
    g = forget_gradients(model, _tiny_data(), np.arange(10), "cpu", batch_size=4)
    m = saliency_masks(g, [0.3], "largest")[0.3]
    path = tmp_path / "sub" / "mask_largest_0.3.pt"
    save_mask(path, m, {"ratio": 0.3, "order": "largest", "arch": "mlp"})
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"mask", "manifest"} and obj["manifest"]["order"] == "largest"
    loaded = load_mask(path, model)
    assert list(loaded) == [n for n, _ in model.named_parameters()]
    for n in m:
        assert loaded[n].dtype == torch.bool and torch.equal(loaded[n], m[n])
    _, manifest = read_mask_file(path)
    assert manifest["ratio"] == 0.3 and manifest["format"] == "saliency-mask/1"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_load_mask_rejects_a_mask_of_another_model(tmp_path):
    mlp3 = _mlp(classes=3)
    m = saliency_masks({n: torch.rand(p.shape) for n, p in mlp3.named_parameters()}, [0.5])[0.5]
    save_mask(tmp_path / "m.pt", m, {})
    with pytest.raises(UserError, match=r"--path .*m\.pt.*'fc\.weight' has shape \(3, 128\)"):
        load_mask(tmp_path / "m.pt", _mlp(classes=5))
    torch.manual_seed(0)
    cnn = build_model("cnn_s", 3, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,))
    with pytest.raises(UserError, match="does not fit the model: 'features.1.weight' has shape"):
        load_mask(tmp_path / "m.pt", cnn)
    save_mask(tmp_path / "other.pt", {**m, "conv9.weight": torch.ones(2, dtype=torch.bool)}, {})
    with pytest.raises(UserError, match="'conv9.weight' is not a parameter"):
        load_mask(tmp_path / "other.pt", mlp3)
    # a mask covering only part of the model
    save_mask(tmp_path / "part.pt", {"fc.weight": m["fc.weight"]}, {})
    with pytest.raises(UserError, match="no entry for parameter"):
        load_mask(tmp_path / "part.pt", mlp3)


def test_original_int64_mask_loads(tmp_path):
    model = _mlp()
    gen = torch.Generator().manual_seed(3)
    orig = {n: (torch.rand(p.shape, generator=gen) < 0.5).long() for n, p in model.named_parameters()}
    torch.save(orig, tmp_path / "hard_0.5_cifar10_resnet18_[-1]_num3000_groupidNone_mem4_seed2.pt")
    loaded = load_mask(tmp_path / "hard_0.5_cifar10_resnet18_[-1]_num3000_groupidNone_mem4_seed2.pt", model)
    for n, t in orig.items():
        assert loaded[n].dtype == torch.bool and torch.equal(loaded[n], t.bool())
    _, manifest = read_mask_file(tmp_path / "hard_0.5_cifar10_resnet18_[-1]_num3000_groupidNone_mem4_seed2.pt")
    assert manifest is None


def test_unreadable_and_non_mask_files(tmp_path):
    model = _mlp()
    with pytest.raises(UserError, match="no such mask file"):
        load_mask(tmp_path / "nope.pt", model)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="cannot read"):
        load_mask(tmp_path / "junk.pt", model)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "model.pt")
    with pytest.raises(UserError, match="model checkpoint, not a saliency mask"):
        load_mask(tmp_path / "model.pt", model)
    torch.save({n: p.detach() for n, p in model.named_parameters()}, tmp_path / "weights.pt")
    with pytest.raises(UserError, match="values other than 0 and 1"):
        load_mask(tmp_path / "weights.pt", model)


def test_mask_path_may_be_a_directory_with_one_mask(tmp_path):
    model = _mlp()
    m = saliency_masks({n: torch.rand(p.shape) for n, p in model.named_parameters()}, [0.2, 0.5])
    save_mask(tmp_path / "one" / "mask_largest_0.2.pt", m[0.2], {})
    assert torch.equal(load_mask(tmp_path / "one", model)["fc.weight"], m[0.2]["fc.weight"])
    save_mask(tmp_path / "one" / "mask_largest_0.5.pt", m[0.5], {})
    with pytest.raises(UserError, match=r"a directory of 2 masks; pass one file.*mask_largest_0\.2\.pt, mask_largest_0\.5\.pt"):
        load_mask(tmp_path / "one", model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="without mask files"):
        load_mask(tmp_path / "empty", model)


def test_provenance_mismatches():
    from unlearn.saliency import provenance_mismatches

    man = {"model_sha256": "a", "model_file": "m.pt", "forget_ids_sha256": "f", "forget_set_name": "fs"}
    assert provenance_mismatches(man, model_sha256="a", forget_ids_sha256="f") == []
    assert provenance_mismatches(None, model_sha256="b") == []
    out = provenance_mismatches(man, model_sha256="b", forget_ids_sha256="g")
    assert len(out) == 2 and "m.pt" in out[0] and "fs" in out[1]
