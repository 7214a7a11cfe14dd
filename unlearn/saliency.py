"""Saliency masks for SalUn (upstream-spec §6.1; DESIGN.md §7.1, §7.6).

Three pure steps, used by ``generate_mask.py``:

1. :func:`forget_gradients` -- the accumulated forget-loss gradient magnitude per parameter:
   ``G = | sum over forget batches of grad( -CE(f(x), y) averaged over the batch ) |``
   (the sum of per-batch *mean* gradients, as the original; no optimizer step). The model is in
   eval mode (BatchNorm running statistics, no dropout) and the forward runs in float32 (no
   autocast). By default inputs are not augmented and batches go in forget-set order, so the mask
   is a deterministic function of model and forget set. The release (``--release``) drew them
   from its shuffled training loader, augmented (upstream-spec §6.1-4): ``augment=`` and
   ``shuffle=True`` with a seeded ``generator`` do the same (the batches' composition, hence the
   weight 1/|B| of each example, and the augmented images then depend on the seed).
2. :func:`saliency_masks` -- one global ranking of all P entries of |G|, then one boolean mask
   per ratio q with exactly ``k = int(P * q)`` entries set (``True`` = salient = the entries the
   unlearning method may move).
3. Mask files: :func:`save_mask` / :func:`load_mask`.

Ranking and ties. The entries are concatenated in the order of the dictionary (for
:func:`forget_gradients`: ``model.named_parameters()`` order), each parameter flattened in
row-major order; an entry's *position* is its index in that vector. ``order="largest"`` sorts
by (value descending, position ascending), ``order="smallest"`` by (value ascending, position
ascending); the first k entries of that order are marked. So among equal values the entry that
comes first (earlier parameter, then lower flat index) is always preferred, whichever the order.
``largest`` is the SalUn paper's and code's intent and this project's default (DESIGN.md §7.1);
``smallest`` reproduces the sharp-unlearn release (its ``rank < k`` rule on an ascending rank
keeps the q smallest; upstream-spec §6.1-5).

Mask file (this project's format): ``torch.save`` of
``{"mask": {param name: bool tensor (CPU)}, "manifest": {...}}``. The manifest records how the
mask was made (model file and its sha256, forget-set file, ratio, order, arch, dataset,
num_params, ...). The original release's mask files -- a plain dict ``name -> int64 0/1 tensor``
-- load as well. Files are read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from utils.batches import iterate
from utils.data import ImageData
from utils.errors import UserError
from utils.io import atomic_torch_save, load_torch_file

ORDERS = ("largest", "smallest")
FORMAT = "saliency-mask/1"
DEFAULT_RATIOS = tuple(round(0.1 * i, 10) for i in range(1, 11))  # 0.1, 0.2, ..., 1.0


# --------------------------------------------------------------------------------------------
# 1. Gradients of the forget loss
# --------------------------------------------------------------------------------------------

def forget_gradients(model: nn.Module, data: ImageData, forget_ids: np.ndarray,
                     device: torch.device | str, batch_size: int, *, augment: Any = None,
                     shuffle: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """``|sum_b grad(-CE_b)|`` per named parameter (float32, CPU), ``CE_b`` the mean
    cross-entropy of forget batch b. The model's parameters, gradients and train/eval mode are
    left as they were (gradients are taken with ``torch.autograd.grad``). ``augment`` (the
    dataset's ``data.augment``, or None), ``shuffle`` and ``generator``: the release's batches
    (module docstring)."""
    device = torch.device(device)
    ids = np.asarray(forget_ids, dtype=np.int64)
    if ids.size == 0:
        raise ValueError("forget_gradients: the forget set is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    named = list(model.named_parameters())
    trainable = [(n, p) for n, p in named if p.requires_grad]
    acc = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in named}
    was_training = model.training
    model.eval()
    try:
        for b in iterate(data.x, data.y, ids, batch_size, shuffle=shuffle, generator=generator, device=device,
                         augment=augment):
            loss = -F.cross_entropy(model(b.x).float(), b.y)
            grads = torch.autograd.grad(loss, [p for _, p in trainable], allow_unused=True)
            for (n, _), g in zip(trainable, grads):
                if g is not None:
                    acc[n].add_(g.detach().float())
    finally:
        model.train(was_training)
    return {n: g.abs_().cpu() for n, g in acc.items()}


# --------------------------------------------------------------------------------------------
# 2. Global ranking -> masks
# --------------------------------------------------------------------------------------------

def check_ratio(q: Any, flag: str = "--mask_ratio") -> float:
    """A ratio must be a number in (0, 1]; anything else is a :class:`UserError` naming ``flag``."""
    try:
        v = float(q)
    except (TypeError, ValueError):
        raise UserError(f"{flag} {q!r}: not a number; accepted: ratios in (0, 1]") from None
    if not math.isfinite(v) or not 0.0 < v <= 1.0:
        raise UserError(f"{flag} {q!r}: must be in (0, 1] (the fraction of parameters marked salient)")
    return v


def ranking(grads: Mapping[str, torch.Tensor], order: str = "largest") -> torch.Tensor:
    """Positions of the concatenated entries, most salient first (see the module docstring)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if not grads:
        raise ValueError("no gradients to rank")
    vec = torch.cat([g.detach().reshape(-1).to("cpu", torch.float64) for g in grads.values()])
    if not bool(torch.isfinite(vec).all()):
        raise ValueError("saliency values contain NaN or infinite entries")
    # A stable sort keeps position order among equal values in both directions; negating for
    # "largest" would not distinguish -0.0 from 0.0, but |G| has no negative zeros and both
    # compare equal anyway, so descending=True with stable=True is exact.
    return torch.sort(vec, descending=(order == "largest"), stable=True).indices


def saliency_masks(grads: Mapping[str, torch.Tensor], ratios: Iterable[float],
                   order: str = "largest") -> dict[float, dict[str, torch.Tensor]]:
    """One mask per ratio: ``{q: {name: BoolTensor of the parameter's shape}}`` with exactly
    ``int(P * q)`` entries ``True`` in total (ratio 1.0 marks everything)."""
    qs = [check_ratio(q) for q in ratios]
    if order not in ORDERS:
        raise UserError(f"--mask_order {order!r}: accepted: {', '.join(ORDERS)}")
    rank = ranking(grads, order)
    total = int(rank.numel())
    shapes = [(n, tuple(g.shape), g.numel()) for n, g in grads.items()]
    out: dict[float, dict[str, torch.Tensor]] = {}
    for q in qs:
        k = int(total * q)
        flat = torch.zeros(total, dtype=torch.bool)
        flat[rank[:k]] = True
        parts: dict[str, torch.Tensor] = {}
        start = 0
        for name, shape, numel in shapes:
            parts[name] = flat[start:start + numel].reshape(shape).clone()
            start += numel
        out[q] = parts
    return out


def ratio_tag(q: float) -> str:
    """The ratio as written in file names: 0.1 -> ``0.1``, 1.0 -> ``1.0``, 0.25 -> ``0.25``."""
    tag = f"{float(q):.6g}"
    if "." not in tag and "e" not in tag:
        tag += ".0"
    return tag


def mask_file_name(order: str, q: float, release: bool = False) -> str:
    """``mask_<order>_<ratio>.pt``; ``..._release.pt`` for the release's mask (``--release``)."""
    return f"mask_{order}_{ratio_tag(q)}{'_release' if release else ''}.pt"


def mask_fraction(mask: Mapping[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in mask.values())
    return float(sum(int(m.bool().sum()) for m in mask.values())) / max(total, 1)


# --------------------------------------------------------------------------------------------
# 3. Mask files
# --------------------------------------------------------------------------------------------

def save_mask(path: str | os.PathLike, mask: Mapping[str, torch.Tensor], manifest: Mapping[str, Any]) -> None:
    """Write ``{"mask": {name: bool CPU tensor}, "manifest": {...}}`` atomically."""
    obj = {"mask": {n: m.detach().to("cpu").bool().contiguous() for n, m in mask.items()},
           "manifest": {"format": FORMAT, **dict(manifest)}}
    atomic_torch_save(path, obj)


def read_mask_file(path: str | os.PathLike, flag: str = "--path") -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """``(mask, manifest)`` of a mask file, this project's format or the original release's
    (``manifest`` None). Entries are boolean CPU tensors. Not checked against a model. ``path``
    may be a directory holding exactly one mask file (:func:`resolve_mask_file`)."""
    p = resolve_mask_file(path, flag)
    try:
        obj = load_torch_file(p)
    except Exception as e:  # not a torch file, damaged, unsafe pickle
        raise UserError(f"{flag} {path}: cannot read the mask file "
                        f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    manifest: dict[str, Any] | None = None
    if isinstance(obj, Mapping) and "mask" in obj and isinstance(obj["mask"], Mapping):
        raw = obj["mask"]
        m = obj.get("manifest")
        manifest = dict(m) if isinstance(m, Mapping) else {}
    elif isinstance(obj, Mapping):
        raw = obj  # the original release: name -> int64 0/1 tensor
    else:
        raise UserError(f"{flag} {path}: not a saliency mask (holds a {type(obj).__name__})")
    if "state_dict" in raw:
        raise UserError(f"{flag} {path}: this is a model checkpoint, not a saliency mask "
                        f"(the model goes to --mask; masks are written by generate_mask.py)")
    if not raw:
        raise UserError(f"{flag} {path}: the mask file holds no entries")
    mask: dict[str, torch.Tensor] = {}
    for name, t in raw.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise UserError(f"{flag} {path}: not a saliency mask (entry {name!r} is a {type(t).__name__}, "
                            f"expected a 0/1 tensor)")
        if t.dtype != torch.bool:
            if t.is_complex() or not bool(((t == 0) | (t == 1)).all()):
                raise UserError(f"{flag} {path}: not a saliency mask (entry {name!r} has values other than 0 and 1)")
            t = t != 0
        mask[name[len("module."):] if name.startswith("module.") else name] = t.to("cpu")
    return mask, manifest


def load_mask(path: str | os.PathLike, model: nn.Module, flag: str = "--path") -> dict[str, torch.Tensor]:
    """Read a mask file and check that it fits ``model``: one entry per parameter, same names and
    shapes. Any mismatch (a mask of another model) is a :class:`UserError` naming ``flag``, the
    file and the first mismatch."""
    mask, _ = read_mask_file(path, flag)
    params = dict(model.named_parameters())
    for name, m in mask.items():
        if name not in params:
            raise UserError(f"{flag} {path}: mask does not fit the model: {name!r} is not a parameter "
                            f"of --arch (a mask of another model?)")
        if tuple(m.shape) != tuple(params[name].shape):
            raise UserError(f"{flag} {path}: mask does not fit the model: {name!r} has shape {tuple(m.shape)}, "
                            f"the parameter has {tuple(params[name].shape)} (a mask of another model?)")
    missing = [n for n in params if n not in mask]
    if missing:
        raise UserError(f"{flag} {path}: mask does not fit the model: no entry for parameter {missing[0]!r} "
                        f"({len(missing)} missing; a mask of another model?)")
    return {n: mask[n] for n in params}


def resolve_mask_file(path: str | os.PathLike, flag: str = "--path") -> Path:
    """``--path`` as a mask file, or a directory holding exactly one ``mask_*.pt``; a directory of
    several masks (what ``generate_mask.py --save DIR`` writes) is a :class:`UserError` listing them."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        found = sorted(q.name for q in p.glob("mask_*.pt"))
        if len(found) == 1:
            return p / found[0]
        if not found:
            raise UserError(f"{flag} {path}: a directory without mask files (generate_mask.py writes mask_<order>_<ratio>.pt)")
        raise UserError(f"{flag} {path}: a directory of {len(found)} masks; pass one file, e.g. "
                        f"{p / found[len(found) // 2]} (all: {', '.join(found)})")
    raise UserError(f"{flag} {path}: no such mask file")


def provenance_mismatches(manifest: Mapping[str, Any] | None, *, model_sha256: str | None = None,
                          forget_ids_sha256: str | None = None) -> list[str]:
    """What differs between how a mask was made and where it is used (empty when it matches or
    the file has no manifest, e.g. the original release's): main_forget.py warns with these."""
    if not manifest:
        return []
    out = []
    if model_sha256 and manifest.get("model_sha256") and manifest["model_sha256"] != model_sha256:
        out.append(f"made on another model ({manifest.get('model_file')})")
    if forget_ids_sha256 and manifest.get("forget_ids_sha256") and manifest["forget_ids_sha256"] != forget_ids_sha256:
        out.append(f"made for another forget set ({manifest.get('forget_set_name') or manifest.get('forget_set')})")
    return out
