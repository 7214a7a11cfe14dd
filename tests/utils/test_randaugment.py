"""utils/randaugment.py: torchvision's RandAugment on whole uint8 batches, grouped by op.

Every op is compared with ``torchvision.transforms.v2.functional`` called per image on the same
uint8 image with the parameters torchvision's ``RandAugment`` passes (signed magnitude from its
``_augmentation_space(31, (H, W))``), and must be EQUAL pixel for pixel: no tolerance is needed.
The geometric ops use torchvision's own float32 sampling grid (same matrix, same ``_affine_grid``
arithmetic, same nearest ``grid_sample``), so no interpolation rounding can differ; the blends use
torchvision's float32 arithmetic with scalar factors (images grouped by sign), the pointwise ops
lookup tables built with that arithmetic.

The original code ran RandAugment on PIL images (torchvision's PIL path). Against it, at the
magnitude it used (15 of 31), the geometric ops, Brightness, Sharpness, Posterize, Solarize and
Equalize are equal too; Color and Contrast (PIL rounds its grayscale and blend where the tensor
kernels floor and truncate) and AutoContrast (PIL builds its lookup table with other rounding)
differ by at most one level, on a bounded fraction of pixels: the stated tolerance of
:func:`test_ops_against_the_original_pil_path` (measured on the fixed test images: Color 21.6%,
Contrast 22.4%, AutoContrast 9.4% of pixels).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode, RandAugment
from torchvision.transforms.v2 import functional as TF

from utils import randaugment as ra
from utils.batches import Augment, augment_batch, iterate
from utils.data import AUGMENT, augment_record, load_data

NEAREST = InterpolationMode.NEAREST


def _images(n: int = 48, h: int = 32, w: int = 32, c: int = 3, seed: int = 0) -> torch.Tensor:
    """uint8 [n, c, h, w]: noise, smooth gradients with noise, low-contrast images, and images with
    a constant channel (the edge cases of AutoContrast / Equalize)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    for i in range(n // 4, n // 2):
        base = (yy * (i % 5) + xx * (3 - i % 3)) * 60 + torch.rand(c, h, w, generator=g) * 20
        x[i] = base.clamp(0, 255).to(torch.uint8)
    for i in range(n // 2, 3 * n // 4):
        x[i] = torch.randint(100, 100 + 1 + i % 7, (c, h, w), generator=g).to(torch.uint8)
    for i in range(3 * n // 4, n):
        x[i, i % c] = 37
    return x


def _tv(name: str, img: torch.Tensor, m: float) -> torch.Tensor:
    """torchvision v2 functional, as ``RandAugment`` calls it, with signed magnitude ``m``."""
    if name == "Identity":
        return img
    if name == "ShearX":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(m)), 0.0],
                         interpolation=NEAREST, fill=None, center=[0, 0])
    if name == "ShearY":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(m))],
                         interpolation=NEAREST, fill=None, center=[0, 0])
    if name == "TranslateX":
        return TF.affine(img, angle=0.0, translate=[int(m), 0], scale=1.0, shear=[0.0, 0.0],
                         interpolation=NEAREST, fill=None)
    if name == "TranslateY":
        return TF.affine(img, angle=0.0, translate=[0, int(m)], scale=1.0, shear=[0.0, 0.0],
                         interpolation=NEAREST, fill=None)
    if name == "Rotate":
        return TF.rotate(img, m, interpolation=NEAREST, fill=None)
    factor = {"Brightness": TF.adjust_brightness, "Color": TF.adjust_saturation,
              "Contrast": TF.adjust_contrast, "Sharpness": TF.adjust_sharpness}
    if name in factor:
        return factor[name](img, 1.0 + m)
    if name == "Posterize":
        return TF.posterize(img, int(m))
    if name == "Solarize":
        return TF.solarize(img, m)
    return {"AutoContrast": TF.autocontrast, "Equalize": TF.equalize}[name](img)


@pytest.mark.parametrize("name", ra.OPS)
@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_each_op_equals_torchvision_v2(name, size):
    h, w = size
    x = _images(h=h, w=w)
    negate = torch.arange(len(x)) % 3 == 1
    for magnitude in (15, 0, 9, 30):
        m = ra.op_magnitudes(magnitude, 31, (h, w))[name]
        ours = ra.apply_op(name, x, m, negate)
        assert ours.dtype == torch.uint8 and ours.shape == x.shape
        for i in range(len(x)):
            sm = -m if (name in ra.SIGNED and negate[i]) else m
            ref = _tv(name, x[i], sm)
            assert torch.equal(ours[i], ref), f"{name} bin {magnitude} image {i}: " \
                f"{(ours[i] != ref).float().mean().item():.4f} of pixels differ"


@pytest.mark.parametrize("name", ["Color", "Contrast", "Sharpness", "AutoContrast", "Equalize", "Brightness"])
def test_single_channel_ops_equal_torchvision(name):
    x = _images(n=16, c=1, seed=4)
    m = ra.op_magnitudes(15, 31, (32, 32))[name]
    ours = ra.apply_op(name, x, m, None)
    for i in range(len(x)):
        assert torch.equal(ours[i], _tv(name, x[i], m)), name


# fraction of pixels allowed to differ (by one level at most) from the PIL path at bin 15
PIL_TOLERANCE = {"Color": 0.25, "Contrast": 0.25, "AutoContrast": 0.10}


@pytest.mark.parametrize("name", ra.OPS)
def test_ops_against_the_original_pil_path(name):
    from PIL import Image
    from torchvision.transforms.autoaugment import _apply_op

    x = _images()
    negate = torch.arange(len(x)) % 3 == 1
    m = ra.op_magnitudes(15, 31, (32, 32))[name]
    ours = ra.apply_op(name, x, m, negate)
    differ, worst = 0, 0
    for i in range(len(x)):
        sm = -m if (name in ra.SIGNED and negate[i]) else m
        pil = _apply_op(Image.fromarray(x[i].permute(1, 2, 0).numpy()), name, sm, NEAREST, None)
        ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
        differ += int((ref != ours[i]).sum())
        worst = max(worst, int((ref.int() - ours[i].int()).abs().max()))
    assert worst <= (1 if name in PIL_TOLERANCE else 0)
    assert differ / x.numel() <= PIL_TOLERANCE.get(name, 0.0)


def test_geometric_conventions_at_magnitude_15():
    """Spot checks of the conventions: TranslateX moves content right by 7 px, zero fill; ShearX
    about pixel (0, 0) leaves row 0 nearly in place; Rotate keeps the centre."""
    x = _images(n=2)
    m = ra.op_magnitudes(15, 31, (32, 32))
    t = ra.translate_x(x, m["TranslateX"])
    assert torch.equal(t[..., 7:], x[..., :-7]) and not t[..., :7].any()
    t = ra.translate_y(x, m["TranslateX"], torch.tensor([True, True]))
    assert torch.equal(t[..., :-7, :], x[..., 7:, :]) and not t[..., -7:, :].any()
    assert math.isclose(m["ShearX"], 0.15, rel_tol=1e-6) and int(m["TranslateX"]) == 7
    assert (m["Rotate"], m["Posterize"], m["Solarize"]) == (15.0, 6.0, 127.5)


def test_magnitude_mapping_equals_torchvision():
    for size in [(32, 32), (24, 40), (224, 224)]:
        theirs = RandAugment()._augmentation_space(31, size)
        ours = ra.augmentation_space(31, size)
        assert list(ours) == list(theirs) == list(ra.OPS)
        for name, (mags, signed) in theirs.items():
            assert ours[name][1] == signed == (name in ra.SIGNED)
            assert torch.equal(ours[name][0], mags), name
            for b in (0, 9, 15, 30):
                want = float(mags[b].item()) if mags.ndim > 0 else 0.0
                assert ra.op_magnitudes(b, 31, size)[name] == want
    with pytest.raises(ValueError):
        ra.op_magnitudes(31, 31, (32, 32))


def _per_image(x: torch.Tensor, ops: torch.Tensor, negate: torch.Tensor, magnitude: int) -> torch.Tensor:
    mags = ra.op_magnitudes(magnitude, 31, tuple(x.shape[-2:]))
    out = []
    for i in range(len(x)):
        img = x[i:i + 1]
        for s in range(ops.shape[1]):
            name = ra.OPS[int(ops[i, s])]
            img = ra.apply_op(name, img, mags[name], negate[i:i + 1, s])
        out.append(img)
    return torch.cat(out)


def test_grouped_batch_equals_per_image_application():
    x = _images(n=96, seed=1)
    ops, negate = ra.draw_ops(len(x), 2, torch.Generator().manual_seed(3))
    assert len(set(ops.flatten().tolist())) == len(ra.OPS)
    grouped = ra.apply_ops(x, ops, negate, 15)
    assert torch.equal(grouped, _per_image(x, ops, negate, 15))
    # and per image against torchvision itself (its op sequence, signs applied to signed ops only)
    mags = ra.op_magnitudes(15, 31, (32, 32))
    for i in range(len(x)):
        img = x[i]
        for s in range(2):
            name = ra.OPS[int(ops[i, s])]
            m = mags[name]
            img = _tv(name, img, -m if name in ra.SIGNED and negate[i, s] else m)
        assert torch.equal(grouped[i], img), i


def test_draws_are_reproducible_from_the_generator():
    x = _images(n=32, seed=2)
    a = ra.rand_augment(x, 2, 15, torch.Generator().manual_seed(7))
    b = ra.rand_augment(x, 2, 15, torch.Generator().manual_seed(7))
    c = ra.rand_augment(x, 2, 15, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    ops, negate = ra.draw_ops(len(x), 2, g1)
    assert torch.equal(ra.apply_ops(x, ops, negate, 15), a)
    ra.rand_augment(x, 2, 15, g2)
    assert torch.equal(g1.get_state(), g2.get_state())  # the draws are all it consumes
    assert torch.equal(x, _images(n=32, seed=2))  # input untouched


def test_ops_and_signs_are_drawn_uniformly():
    n = 30000
    ops, negate = ra.draw_ops(n, 2, torch.Generator().manual_seed(0))
    assert ops.shape == negate.shape == (n, 2) and negate.dtype == torch.bool
    counts = np.bincount(ops.flatten().numpy(), minlength=len(ra.OPS))
    expect = 2 * n / len(ra.OPS)
    assert len(counts) == 14 and np.all(np.abs(counts - expect) < 5 * math.sqrt(expect))
    assert abs(negate.float().mean().item() - 0.5) < 0.01
    assert abs((ops[:, 0] == ops[:, 1]).float().mean().item() - 1 / 14) < 0.01  # slots independent


def test_rejects_float_images():
    with pytest.raises(TypeError):
        ra.rand_augment(torch.rand(2, 3, 8, 8), 2, 15, torch.Generator())


# --- the augmentation spec and its callers ---------------------------------------------------------

def test_dataset_augmentation_specs(cifar_data):
    root, _ = cifar_data
    c100, c10 = load_data("cifar100", root), load_data("cifar10", root)
    assert c100.augment == Augment(4, True, randaugment=(2, 15))
    assert c10.augment == Augment(4, True) and c10.augment.randaugment is None
    assert all(AUGMENT[name].randaugment is None for name in AUGMENT if name != "cifar100")
    assert augment_record(c100, True) == {
        "random_crop_padding": 4, "horizontal_flip": True,
        "randaugment": {"num_ops": 2, "magnitude": 15, "num_magnitude_bins": 31, "interpolation": "nearest",
                        "fill": 0}}
    assert augment_record(c10, True) == {"random_crop_padding": 4, "horizontal_flip": True, "randaugment": None}
    assert augment_record(c100, False) is None and augment_record("svhn", True) is None


def _old_iterate_x(x, ids, bs, seed, pad, flip):
    """The batches of the pre-RandAugment ``iterate``: float conversion first, then crop/flip."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ids), generator=gen)
    out = []
    for start in range(0, len(ids), bs):
        xb = x[torch.as_tensor(ids)[order[start:start + bs]]].float().div_(255)
        out.append(augment_batch(xb, pad, flip, gen))
    return out


def test_without_randaugment_iterate_is_bitwise_unchanged():
    x = _images(n=40, seed=5)
    y = torch.zeros(40, dtype=torch.long)
    ids = np.arange(3, 40)
    for aug in (Augment(4, True), (4, True), Augment(1, False)):
        pad, flip = (aug.pad, aug.flip) if isinstance(aug, Augment) else aug
        new = [b.x for b in iterate(x, y, ids, 8, shuffle=True, generator=torch.Generator().manual_seed(9),
                                    augment=aug)]
        old = _old_iterate_x(x, ids, 8, 9, pad, flip)
        assert all(torch.equal(a, b) for a, b in zip(new, old)) and len(new) == len(old)


def test_iterate_applies_randaugment_after_crop_and_flip():
    x = _images(n=40, seed=6)
    y = torch.zeros(40, dtype=torch.long)
    ids = np.arange(40)
    spec = Augment(4, True, randaugment=(2, 15))
    got = [b for b in iterate(x, y, ids, 16, shuffle=True, generator=torch.Generator().manual_seed(1), augment=spec)]
    gen = torch.Generator().manual_seed(1)
    order = torch.randperm(40, generator=gen)
    for k, b in enumerate(got):
        xb = augment_batch(x[order[16 * k:16 * (k + 1)]], 4, True, gen)
        ops, negate = ra.draw_ops(len(xb), 2, gen)
        want = ra.apply_ops(xb, ops, negate, 15)
        assert torch.equal(b.x, want.float() / 255) and b.x.dtype == torch.float32


def test_stacked_augmentation_draws_as_per_model_batches():
    """The memorization ensemble's path: model k's batch with model k's generator, exactly as
    ``Augment.__call__`` (hence ``iterate``) would draw it, RandAugment run once on all models."""
    x = _images(n=60, seed=7).view(3, 20, 3, 32, 32)
    for spec in (Augment(4, True, randaugment=(2, 15)), Augment(4, True)):
        gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
        ref_gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
        stacked = spec.stacked(x, gens)
        for k in range(3):
            assert torch.equal(stacked[k], spec(x[k], ref_gens[k]))
            assert torch.equal(gens[k].get_state(), ref_gens[k].get_state())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_result_equals_cpu():
    x = _images(n=128, seed=8)
    ops, negate = ra.draw_ops(len(x), 2, torch.Generator().manual_seed(0))
    assert torch.equal(ra.apply_ops(x.cuda(), ops, negate, 15).cpu(), ra.apply_ops(x, ops, negate, 15))
