"""RandAugment on whole batches of uint8 images, on the device that holds them (DESIGN.md §3).

RandAugment (Cubuk, Zoph, Shlens, Le, "RandAugment: Practical automated data augmentation with a
reduced search space", CVPR-W 2020) as ``torchvision.transforms.RandAugment`` implements it, the
CIFAR-100 training transform of the original code (upstream-spec §4.3: RandomCrop(32, 4) ->
RandomHorizontalFlip -> ``RandAugment(num_ops=2, magnitude=15)``, torchvision defaults
``num_magnitude_bins=31``, ``interpolation=NEAREST``, ``fill=None``, i.e. 0). For every image,
``num_ops`` times: draw one of the 14 ops below uniformly; take its magnitude from the op's table at
bin ``magnitude``; negate it with probability 1/2 when the op is signed; apply the op.

The op set and magnitude tables are torchvision's ``RandAugment._augmentation_space(num_bins,
(H, W))`` (float32 ``torch.linspace``, as there); at bin 15 of 31 on 32x32 images:

==============  ===========================================  ===========  ==========================
op              table (num_bins values)                      bin 15       applied as (m signed)
==============  ===========================================  ===========  ==========================
Identity        -                                            -            nothing
ShearX, ShearY  linspace(0, 0.3)                             0.15         affine, shear atan(m) in
                                                                          degrees, center (0, 0)
TranslateX/Y    linspace(0, 150/331 * W (X) or H (Y))        7.2508       affine, int(m) = +-7 px
Rotate          linspace(0, 30) degrees                      15           rotate about the center
Brightness      linspace(0, 0.9)                             0.45         factor 1 + m (1.45, 0.55)
Color           linspace(0, 0.9)                             0.45         saturation, factor 1 + m
Contrast        linspace(0, 0.9)                             0.45         factor 1 + m
Sharpness       linspace(0, 0.9)                             0.45         factor 1 + m
Posterize       8 - round(arange(num_bins) / ((num_bins-1)/4))  6 bits   keep the 6 high bits
Solarize        linspace(255, 0)                             127.5        invert pixels >= 127.5
AutoContrast    -                                            -            per channel to [0, 255]
Equalize        -                                            -            per channel histogram
==============  ===========================================  ===========  ==========================

Signed: the shears, translations, Rotate and the four factor ops. Each op function here reproduces
``torchvision.transforms.v2.functional`` on uint8 tensors bit for bit (the tests check it):

* geometric ops use torchvision's inverse affine matrix (``_get_inverse_affine_matrix``, scale 1)
  and its float32 sampling grid (``_affine_grid``); nearest-neighbour ``grid_sample`` of that grid,
  evaluated once per (op, sign, H, W) on an image of pixel indices, gives a source-index map, and
  an image is transformed by one gather through it; outside the image: 0 (``fill``);
* Brightness, Posterize and Solarize are functions of the pixel value alone: 256-entry lookup
  tables, built with torchvision's arithmetic (``clamp(v * f, 0, 255)`` truncated to uint8);
* Color, Contrast and Sharpness blend with a degenerate image as torchvision does in float32
  (``img * f + deg * (1 - f)``, clamp to [0, 255], truncate to uint8; grayscale
  ``0.2989 R + 0.587 G + 0.114 B`` floored; Contrast's degenerate is the grayscale mean;
  Sharpness's the 3x3 [1 1 1; 1 5 1; 1 1 1]/13 blur, rounded, borders kept);
* AutoContrast and Equalize are torchvision's batched kernels (Equalize with PIL's LUT scheme).

The original code applied RandAugment to PIL images. The geometric ops, Brightness, Sharpness,
Posterize, Solarize and Equalize give the same pixels on PIL images; Color, Contrast (PIL rounds
its grayscale and blend where the tensor kernels floor and truncate) and AutoContrast (other
rounding in PIL's lookup table) differ by at most one level on some pixels (about 22%, 22% and 9%
of them in the tests): the same augmentation, up to that rounding.

Batches: :func:`draw_ops` draws, per image and slot, the op (``randint(14)``) and the sign
(``randint(2)``) from the given CPU generator; :func:`apply_ops` applies slot after slot, grouping
the images of a slot by op (all geometric ops: one gather; the lookup-table ops: one gather; each
other op: one batched call), so a batch costs a few dozen kernel calls whatever its size. The
draws live on the CPU, so grouping never synchronizes with the device, and the result does not
depend on the device.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F

OPS: tuple[str, ...] = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
                        "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
SIGNED = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
                    "Sharpness"})
GEOMETRIC: tuple[str, ...] = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
NUM_MAGNITUDE_BINS = 31
INTERPOLATION = "nearest"
FILL = 0
_OP = {name: i for i, name in enumerate(OPS)}


def augmentation_space(num_bins: int, image_size: tuple[int, int]) -> dict[str, tuple[torch.Tensor, bool]]:
    """``{op: (magnitudes, signed)}``: torchvision ``RandAugment._augmentation_space`` (``image_size``
    is ``(H, W)``); a 0-d tensor means the op takes no magnitude."""
    h, w = image_size
    factor = torch.linspace(0.0, 0.9, num_bins)
    return {
        "Identity": (torch.tensor(0.0), False),
        "ShearX": (torch.linspace(0.0, 0.3, num_bins), True),
        "ShearY": (torch.linspace(0.0, 0.3, num_bins), True),
        "TranslateX": (torch.linspace(0.0, 150.0 / 331.0 * w, num_bins), True),
        "TranslateY": (torch.linspace(0.0, 150.0 / 331.0 * h, num_bins), True),
        "Rotate": (torch.linspace(0.0, 30.0, num_bins), True),
        "Brightness": (factor, True),
        "Color": (factor.clone(), True),
        "Contrast": (factor.clone(), True),
        "Sharpness": (factor.clone(), True),
        "Posterize": (8 - (torch.arange(num_bins) / ((num_bins - 1) / 4)).round().int(), False),
        "Solarize": (torch.linspace(255.0, 0.0, num_bins), False),
        "AutoContrast": (torch.tensor(0.0), False),
        "Equalize": (torch.tensor(0.0), False),
    }


def op_magnitudes(magnitude: int, num_bins: int, image_size: tuple[int, int]) -> dict[str, float]:
    """The unsigned magnitude of every op at bin ``magnitude`` (0.0 for ops without one), as
    torchvision reads it: ``float(magnitudes[magnitude].item())``."""
    if not 0 <= magnitude < num_bins:
        raise ValueError(f"magnitude {magnitude} outside 0..{num_bins - 1}")
    return {name: float(m[magnitude].item()) if m.ndim > 0 else 0.0
            for name, (m, _) in augmentation_space(num_bins, image_size).items()}


# --- geometric ops: torchvision's inverse affine matrix and grid, nearest, fill 0 ------------------

def _inverse_affine(center: list[float], angle: float, translate: list[float], shear: list[float]) -> list[float]:
    """torchvision ``_get_inverse_affine_matrix(center, angle, translate, 1.0, shear)``: the output ->
    input map ``C RSS^-1 C^-1 T^-1`` in coordinates centred on the image."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    cos_sy, tan_sx = math.cos(sy), math.tan(sx)
    a = math.cos(rot - sy) / cos_sy
    b = -(a * tan_sx + math.sin(rot))
    c = math.sin(rot - sy) / cos_sy
    d = math.cos(rot) - c * tan_sx
    m = [d / 1.0, -b / 1.0, 0.0, -c / 1.0, a / 1.0, 0.0]
    m[2] += cx - m[0] * (cx + tx) - m[1] * (cy + ty)
    m[5] += cy - m[3] * (cx + tx) - m[4] * (cy + ty)
    return m


def _affine_matrix(name: str, m: float, h: int, w: int) -> list[float]:
    """The inverse matrix torchvision's RandAugment uses for geometric op ``name`` with signed
    magnitude ``m`` (ShearX/Y about pixel (0, 0), TranslateX/Y by ``int(m)`` pixels, Rotate by ``m``
    degrees counter-clockwise about the centre)."""
    corner = [0.0 - w * 0.5, 0.0 - h * 0.5]  # center=[0, 0] moved to centred coordinates
    if name == "ShearX":
        return _inverse_affine(corner, 0.0, [0.0, 0.0], [math.degrees(math.atan(m)), 0.0])
    if name == "ShearY":
        return _inverse_affine(corner, 0.0, [0.0, 0.0], [0.0, math.degrees(math.atan(m))])
    if name == "TranslateX":
        return _inverse_affine([0.0, 0.0], 0.0, [float(int(m)), 0.0], [0.0, 0.0])
    if name == "TranslateY":
        return _inverse_affine([0.0, 0.0], 0.0, [0.0, float(int(m))], [0.0, 0.0])
    if name == "Rotate":
        return _inverse_affine([0.0, 0.0], -(m % 360), [0.0, 0.0], [0.0, 0.0])
    raise ValueError(f"{name!r} is not a geometric op")


@lru_cache(maxsize=256)
def _source_map(name: str, m: float, h: int, w: int) -> torch.Tensor:
    """int64 ``[H*W]``: for every output pixel, 1 + the flat index of the input pixel that
    torchvision's nearest ``grid_sample`` reads for op ``name`` (signed magnitude ``m``), 0 where it
    falls outside the image. Built on the CPU with torchvision's float32 grid (``_affine_grid``)."""
    theta = torch.tensor(_affine_matrix(name, m, h, w), dtype=torch.float32).reshape(1, 2, 3)
    base = torch.empty(1, h, w, 3, dtype=torch.float32)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h).unsqueeze_(-1))
    base[..., 2].fill_(1)
    rescaled = theta.transpose(1, 2).div_(torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32))
    grid = base.view(1, h * w, 3).bmm(rescaled).view(1, h, w, 2)
    index = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w)
    out = F.grid_sample(index, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round().long().view(h * w)


def remap(x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Image i of ``x`` (``[N, C, H, W]``) through source map ``maps[i]`` (``[N, H*W]`` on ``x``'s
    device, as :func:`_source_map`): one gather for the whole batch, 0 outside."""
    n, c, h, w = x.shape
    flat = F.pad(x.reshape(n, c, h * w), (1, 0))  # index 0: the fill
    return flat.gather(2, maps[:, None, :].expand(n, c, h * w)).view(n, c, h, w)


def _geometric(name: str, x: torch.Tensor, m: float, negate: torch.Tensor | None) -> torch.Tensor:
    h, w = x.shape[-2:]
    table = torch.stack([_source_map(name, m, h, w), _source_map(name, -m, h, w)]).to(x.device)
    return remap(x, table[_signs(negate, len(x)).to(x.device)])


def _signs(negate: torch.Tensor | None, n: int) -> torch.Tensor:
    """int64 ``[n]`` on the CPU: 1 where image i's magnitude is negated."""
    if negate is None:
        return torch.zeros(n, dtype=torch.long)
    return torch.as_tensor(negate).to("cpu", torch.long).reshape(n)


def shear_x(x: torch.Tensor, m: float, negate: torch.Tensor | None = None) -> torch.Tensor:
    """ShearX by ``m`` (``-m`` where ``negate``): ``F.affine(shear=[degrees(atan(m)), 0], center=[0, 0])``."""
    return _geometric("ShearX", x, m, negate)


def shear_y(x: torch.Tensor, m: float, negate: torch.Tensor | None = None) -> torch.Tensor:
    """ShearY by ``m`` (``-m`` where ``negate``): ``F.affine(shear=[0, degrees(atan(m))], center=[0, 0])``."""
    return _geometric("ShearY", x, m, negate)


def translate_x(x: torch.Tensor, m: float, negate: torch.Tensor | None = None) -> torch.Tensor:
    """TranslateX: ``F.affine(translate=[int(m), 0])`` (``-m`` where ``negate``)."""
    return _geometric("TranslateX", x, m, negate)


def translate_y(x: torch.Tensor, m: float, negate: torch.Tensor | None = None) -> torch.Tensor:
    """TranslateY: ``F.affine(translate=[0, int(m)])`` (``-m`` where ``negate``)."""
    return _geometric("TranslateY", x, m, negate)


def rotate(x: torch.Tensor, m: float, negate: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate: ``F.rotate(angle=m)`` degrees about the centre (``-m`` where ``negate``)."""
    return _geometric("Rotate", x, m, negate)


# --- pointwise ops: 256-entry lookup tables ----------------------------------------------------------

def _brightness_lut(factor: float) -> torch.Tensor:
    return torch.arange(256, dtype=torch.uint8).mul(factor).clamp_(0, 255).to(torch.uint8)


def _posterize_lut(bits: int) -> torch.Tensor:
    if not 0 <= bits <= 8:
        raise ValueError(f"posterize bits {bits} outside 0..8")
    v = torch.arange(256, dtype=torch.uint8)
    return v if bits >= 8 else v & (((1 << bits) - 1) << (8 - bits))


def _solarize_lut(threshold: float) -> torch.Tensor:
    if threshold > 255:
        raise ValueError(f"solarize threshold {threshold} above 255")
    v = torch.arange(256, dtype=torch.uint8)
    return torch.where(v >= threshold, v.bitwise_not(), v)


def lookup(x: torch.Tensor, luts: torch.Tensor) -> torch.Tensor:
    """Image i of ``x`` (uint8 ``[N, C, H, W]``) through table ``luts[i]`` (uint8 ``[N, 256]``)."""
    n = len(x)
    return luts.gather(1, x.reshape(n, -1).long()).view(x.shape)


def brightness(x: torch.Tensor, m: float, negate: torch.Tensor | None = None) -> torch.Tensor:
    """``F.adjust_brightness(factor=1 + m)`` (``1 - m`` where ``negate``): ``trunc(clamp(v * f))``."""
    table = torch.stack([_brightness_lut(1.0 + m), _brightness_lut(1.0 + -m)]).to(x.device)
    return lookup(x, table[_signs(negate, len(x)).to(x.device)])


def posterize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``F.posterize(bits)``: keep the ``bits`` high bits of every pixel."""
    return lookup(x, _posterize_lut(int(bits)).to(x.device).expand(len(x), 256))


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """``F.solarize(threshold)``: ``255 - v`` where ``v >= threshold``."""
    return lookup(x, _solarize_lut(threshold).to(x.device).expand(len(x), 256))


# --- blends with a degenerate image (float32, clamp, truncate: torchvision's ``_blend``) ------------

def _blend(x: torch.Tensor, degenerate: torch.Tensor, ratio: float) -> torch.Tensor:
    return x.mul(ratio).add_(degenerate, alpha=(1.0 - ratio)).clamp_(0, 255).to(x.dtype)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3).floor_()


def _saturation(x: torch.Tensor, factor: float) -> torch.Tensor:
    return x if x.shape[-3] == 1 else _blend(x, _grayscale(x), factor)


def _contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    gray = _grayscale(x) if x.shape[-3] == 3 else x.to(torch.float32)
    return _blend(x, torch.mean(gray, dim=(-3, -2, -1), keepdim=True), factor)


def _sharpness(x: torch.Tensor, factor: float) -> torch.Tensor:
    n, c, h, w = x.shape
    if h <= 2 or w <= 2:
        return x
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=torch.float32, device=x.device)
    out = x.to(dtype=torch.float32, copy=True)
    blurred = F.conv2d(out, kernel.expand(c, 1, 3, 3), groups=c).round_()
    view = out[..., 1:-1, 1:-1]
    view.add_(blurred.sub_(view), alpha=(1.0 - factor))
    return out.clamp_(0, 255).to(x.dtype)


def _by_sign(kernel: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor, m: float,
             negate: torch.Tensor | None) -> torch.Tensor:
    """``kernel(images, 1 + m)`` on the images not negated and ``kernel(images, 1 - m)`` on the
    others: two scalar-factor calls, so the float32 arithmetic is torchvision's exactly."""
    signs = _signs(negate, len(x))
    if not bool(signs.any()):
        return kernel(x, 1.0 + m)
    if bool(signs.all()):
        return kernel(x, 1.0 + -m)
    out = torch.empty_like(x)
    for s, factor in ((0, 1.0 + m), (1, 1.0 + -m)):
        idx = (signs == s).nonzero().flatten().to(x.device)
        out.index_copy_(0, idx, kernel(x.index_select(0, idx), factor))
    return out


def color(x: torch.Tensor, m: float, negate: torch.Tensor | None = None) -> torch.Tensor:
    """``F.adjust_saturation(factor=1 + m)``: blend with the floored grayscale (1 channel: unchanged)."""
    return _by_sign(_saturation, x, m, negate)


def contrast(x: torch.Tensor, m: float, negate: torch.Tensor | None = None) -> torch.Tensor:
    """``F.adjust_contrast(factor=1 + m)``: blend with the mean of the floored grayscale."""
    return _by_sign(_contrast, x, m, negate)


def sharpness(x: torch.Tensor, m: float, negate: torch.Tensor | None = None) -> torch.Tensor:
    """``F.adjust_sharpness(factor=1 + m)``: blend the interior with the rounded 3x3 blur."""
    return _by_sign(_sharpness, x, m, negate)


# --- per-image statistics ----------------------------------------------------------------------------

def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """``F.autocontrast``: every channel of every image stretched linearly to [0, 255]
    (``(v - min) / ((max - min) / 255)``, clamped, truncated; constant channels unchanged)."""
    if x.numel() == 0:
        return x
    v = x.to(torch.float32)
    lo = v.amin(dim=(-2, -1), keepdim=True)
    hi = v.amax(dim=(-2, -1), keepdim=True)
    flat = hi == lo
    inv_scale = torch.where(flat, 1.0, hi.sub_(lo).mul_(1.0 / 255))  # torchvision: masked assignment
    lo = torch.where(flat, 0.0, lo)
    return v.sub_(lo).div_(inv_scale).clamp_(0, 255).to(x.dtype)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """``F.equalize``: per-channel histogram equalization with PIL's lookup table
    ``lut[k] = (cum_hist[k-1] + step // 2) // step``, ``step = (#pixels - count of the largest
    value) // 255``; channels with ``step == 0`` unchanged."""
    if x.numel() == 0:
        return x
    batch_shape = x.shape[:-2]
    flat = x.flatten(start_dim=-2).to(torch.long)
    hist = flat.new_zeros(batch_shape + (256,), dtype=torch.int32)
    hist.scatter_add_(dim=-1, index=flat, src=hist.new_ones(1).expand_as(flat))
    cum = hist.cumsum(dim=-1)
    top = cum.argmax(dim=-1)
    non_max = flat.shape[-1] - hist.gather(dim=-1, index=top.unsqueeze_(-1))
    step = non_max.div_(255, rounding_mode="floor")
    valid = step.ne(0).unsqueeze_(-1)
    cum = cum[..., :-1]
    cum.add_(step // 2).div_(step.clamp_(min=1), rounding_mode="floor").clamp_(0, 255)
    lut = torch.cat([cum.new_zeros(1).to(torch.uint8).expand(batch_shape + (1,)), cum.to(torch.uint8)], dim=-1)
    out = lut.gather(dim=-1, index=flat).view_as(x)
    return torch.where(valid, out, x)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


# --- RandAugment on a batch --------------------------------------------------------------------------

def draw_ops(n: int, num_ops: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ops, negate)``, both ``[n, num_ops]`` on the CPU: per image and slot the op index into
    :data:`OPS` (uniform) and whether its magnitude is negated (probability 1/2; ignored by the
    unsigned ops). Drawn in that order from ``generator``."""
    ops = torch.randint(len(OPS), (n, num_ops), generator=generator)
    negate = torch.randint(2, (n, num_ops), generator=generator).bool()
    return ops, negate


@lru_cache(maxsize=32)
def _tables(magnitude: int, num_bins: int, h: int, w: int, device: str) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """``(magnitudes, geometric maps [10, H*W], lookup tables [4, 256])`` on ``device``; map row
    ``2 * GEOMETRIC.index(op) + negated``, table rows Brightness +, Brightness -, Posterize, Solarize."""
    mags = op_magnitudes(magnitude, num_bins, (h, w))
    maps = torch.stack([_source_map(name, s * mags[name], h, w) for name in GEOMETRIC for s in (1.0, -1.0)])
    luts = torch.stack([_brightness_lut(1.0 + mags["Brightness"]), _brightness_lut(1.0 + -mags["Brightness"]),
                        _posterize_lut(int(mags["Posterize"])), _solarize_lut(mags["Solarize"])])
    return mags, maps.to(device), luts.to(device)


_GEO_ROW = torch.full((len(OPS),), -1, dtype=torch.long)
_GEO_ROW[[_OP[name] for name in GEOMETRIC]] = torch.arange(0, 2 * len(GEOMETRIC), 2)
_LUT_ROW = torch.full((len(OPS),), -1, dtype=torch.long)
_LUT_ROW[[_OP["Brightness"], _OP["Posterize"], _OP["Solarize"]]] = torch.tensor([0, 2, 3])
_BLENDS = (("Color", color), ("Contrast", contrast), ("Sharpness", sharpness))


def _apply_slot(x: torch.Tensor, ops: torch.Tensor, negate: torch.Tensor, tables: tuple) -> torch.Tensor:
    """One slot: image i gets op ``ops[i]``; images grouped by op (all geometric ops together, all
    lookup-table ops together, each other op on its own)."""
    mags, maps, luts = tables
    out = x.clone()
    dev = x.device

    def put(mask: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        idx = mask.nonzero().flatten()
        if len(idx):
            idx_dev = idx.to(dev)
            out.index_copy_(0, idx_dev, fn(x.index_select(0, idx_dev), idx))

    neg = negate.long()
    geo_row, lut_row = _GEO_ROW[ops], _LUT_ROW[ops]
    signed_lut = (ops == _OP["Brightness"]).long() * neg  # only Brightness is signed among the tables
    put(geo_row >= 0, lambda xs, i: remap(xs, maps[(geo_row[i] + neg[i]).to(dev)]))
    put(lut_row >= 0, lambda xs, i: lookup(xs, luts[(lut_row[i] + signed_lut[i]).to(dev)]))
    for name, fn in _BLENDS:
        put(ops == _OP[name], lambda xs, i, fn=fn, name=name: fn(xs, mags[name], negate[i]))
    put(ops == _OP["AutoContrast"], lambda xs, i: autocontrast(xs))
    put(ops == _OP["Equalize"], lambda xs, i: equalize(xs))
    return out


def apply_ops(x: torch.Tensor, ops: torch.Tensor, negate: torch.Tensor, magnitude: int,
              num_bins: int = NUM_MAGNITUDE_BINS) -> torch.Tensor:
    """RandAugment with the given draws (:func:`draw_ops`) on uint8 ``x`` ``[N, C, H, W]``: slot
    after slot, image i gets op ``OPS[ops[i, s]]`` at bin ``magnitude``, negated where
    ``negate[i, s]`` and the op is signed. Returns a new uint8 tensor on ``x``'s device."""
    if x.dtype != torch.uint8:
        raise TypeError(f"RandAugment works on uint8 images, got {x.dtype}")
    if x.ndim != 4 or ops.shape != negate.shape or ops.ndim != 2 or len(ops) != len(x):
        raise ValueError(f"images {tuple(x.shape)}, ops {tuple(ops.shape)}, negate {tuple(negate.shape)}")
    h, w = x.shape[-2:]
    tables = _tables(int(magnitude), int(num_bins), int(h), int(w), str(x.device))
    ops, negate = ops.cpu(), negate.cpu().bool()
    for s in range(ops.shape[1]):
        x = _apply_slot(x, ops[:, s], negate[:, s], tables)
    return x


def rand_augment(x: torch.Tensor, num_ops: int, magnitude: int, generator: torch.Generator,
                 num_bins: int = NUM_MAGNITUDE_BINS) -> torch.Tensor:
    """torchvision ``RandAugment(num_ops, magnitude, num_bins)`` on every image of uint8 ``x``
    ``[N, C, H, W]`` independently, the draws from the CPU ``generator`` (:func:`draw_ops`)."""
    ops, negate = draw_ops(len(x), num_ops, generator)
    return apply_ops(x, ops, negate, magnitude, num_bins)


def apply_op(name: str, x: torch.Tensor, m: float, negate: torch.Tensor | None = None) -> torch.Tensor:
    """Op ``name`` of :data:`OPS` on every image of ``x`` with unsigned magnitude ``m`` (the per-op
    functions above; ``negate`` for the signed ops)."""
    if name in SIGNED:
        return _SIGNED_FN[name](x, m, negate)
    if name == "Posterize":
        return posterize(x, int(m))
    if name == "Solarize":
        return solarize(x, m)
    return {"Identity": identity, "AutoContrast": autocontrast, "Equalize": equalize}[name](x)


_SIGNED_FN = {"ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x, "TranslateY": translate_y,
              "Rotate": rotate, "Brightness": brightness, "Color": color, "Contrast": contrast,
              "Sharpness": sharpness}
