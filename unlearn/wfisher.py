"""Influence unlearning with a WoodFisher-style inverse-Hessian estimate (``wfisher``).

Source: the influence-function unlearning of Jia et al., "Model Sparsity Can Simplify Machine
Unlearning" (NeurIPS 2023), as ported by SalUn (Fan et al., ICLR 2024) and used by sharp-unlearn and
RUM; WoodFisher is Singh & Alistarh, NeurIPS 2020. The update replicates upstream-spec §5.9. One
shot: no optimizer, no SAM, no epochs. Flag: ``--alpha`` (the step size, swept by RUM).

Update rule (model in eval mode, no augmentation, per-sample loss CE(f_theta(x_i), y_i))::

    F   = sum_{i in forget} grad CE_i        R = sum_{i in retain} grad CE_i        (flattened over
    n_f = |forget|, n_r = |retain|, n = n_f + n_r                                    requires_grad params)
    v   = F / n - R * n_f / (n * n_r)
    g_0 .. g_{T-1}: per-sample gradients of the first T = NUM_SAMPLES (1002) retain examples, in
                    ``task.retain_ids`` order (the original's unshuffled retain loader, batch size 1)
    k <- v;  o <- g_0
    for t = 1 .. T-1:  tau = <o, g_t>;  k <- k - (<k, g_t> / (N_w + tau)) o;  o <- o - (tau / (N_w + tau)) o
    theta <- theta + alpha * k        (entries outside a saliency mask unchanged)

with N_w = N_W = 1000 (the original's CIFAR constant; its ImageNet branch uses 300000). The original
stops after processing index N_w + 1, hence T = N_w + 2 = 1002 samples (fewer if the retain set is
smaller).

What the recursion computes (not an inverse-Fisher-vector product). The textbook WoodFisher
recursion updates the estimate of H^{-1} with a fresh Sherman-Morrison term per sample, whose
vector is H_{t-1}^{-1} g_t; it would return (I + (1/N_w) sum_t g_t g_t^T)^{-1} v. The original
instead sets ``o`` once, to g_0, and only rescales it: o_{t} = c_t g_0 with
c_t = c_{t-1} N_w / (N_w + tau_t). Each step is then k <- (I + (c_{t-1}/N_w) g_0 g_t^T)^{-1} k
(Sherman-Morrison), and since c_{t-1} (1 + w_{t-1}^T g_0) = 1 along the product, the composition
telescopes to the rank-one, non-symmetric system

    k = (I + g_0 S^T / N_w)^{-1} v = v - g_0 (S^T v) / (N_w + S^T g_0),    S = g_1 + ... + g_{T-1}

(exact in exact arithmetic whenever no intermediate N_w + tau_t vanishes; see
:func:`woodfisher_closed_form` and the tests). So the update moves v only along the first retain
sample's gradient g_0, by an amount set by the summed gradient of the next T-1 retain samples.
This is replicated as the original does it (the per-sample recursion), not corrected.

Decisions:

- No augmentation: the gradients are a one-shot estimate at the trained weights, so they are taken
  on clean inputs whatever ``--no_aug`` says (the original computed them on training-transform,
  i.e. randomly augmented, inputs, which makes the estimate random). No autocast either: all
  gradients are float32.
- F and R are computed as gradients of the summed (``reduction="sum"``) batch loss, which equals the
  original's sum over batches of |B| * grad(mean CE_B).
- Per-sample gradients use torch.func (``functional_call`` + ``vmap`` + ``grad``) in chunks of at
  most GRAD_CHUNK_BYTES, with a per-sample backward loop as fallback for models vmap cannot take;
  the recursion streams over the chunks, so memory stays bounded for large models.
- A saliency mask (``--path``) keeps masked-out entries bitwise unchanged (DESIGN.md §7.6).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.mask import Mask
from unlearn.base import UnlearnConfig, UnlearnTask, batches
from utils.batches import iterate

N_W = 1000.0  # the original's WoodFisher sample-count constant (CIFAR branch; ImageNet: 300000)
NUM_SAMPLES = int(N_W) + 2  # the original stops after index N_W + 1: samples 0 .. 1001
GRAD_CHUNK_BYTES = 1 << 30  # memory budget of one chunk of per-sample gradients


# --- the recursion -------------------------------------------------------------------------------

def woodfisher_ihvp(v: torch.Tensor, grads: torch.Tensor | Iterable[torch.Tensor], n_w: float) -> torch.Tensor:
    """The original's WoodFisher recursion applied to ``v`` (module docstring).

    ``grads`` is a ``[T, P]`` tensor of per-sample gradients in order, or an iterable of ``[t_i, P]``
    chunks (streamed). Computed in ``v``'s dtype; returns a new tensor ``k`` of shape ``[P]``.
    Equals :func:`woodfisher_closed_form` in exact arithmetic."""
    k = v.clone()
    o: torch.Tensor | None = None
    chunks = [grads] if isinstance(grads, torch.Tensor) else grads
    for chunk in chunks:
        for g in chunk.reshape(-1, v.numel()):
            g = g.to(v.dtype)
            if o is None:
                o = g.clone()
                continue
            tau = torch.dot(o, g)
            denom = n_w + tau
            k.sub_((torch.dot(k, g) / denom) * o)
            o.sub_((tau / denom) * o)
    return k


def woodfisher_closed_form(v: torch.Tensor, g0: torch.Tensor, s: torch.Tensor, n_w: float) -> torch.Tensor:
    """``(I + g0 s^T / n_w)^{-1} v = v - g0 (s.v) / (n_w + s.g0)``: what :func:`woodfisher_ihvp`
    computes when ``g0`` is the first gradient and ``s`` the sum of the others."""
    return v - g0 * (torch.dot(s, v) / (n_w + torch.dot(s, g0)))


# --- gradients -----------------------------------------------------------------------------------

def trainable_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``requires_grad`` parameters in ``named_parameters()`` order: the flattening order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _flatten(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def summed_grad(model: nn.Module, batch_iter: Iterable) -> tuple[torch.Tensor, int]:
    """Sum over all examples of the per-sample CE gradient, flattened, and the example count."""
    params = [p for _, p in trainable_params(model)]
    total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    count = 0
    for b in batch_iter:
        loss = F.cross_entropy(model(b.x).float(), b.y, reduction="sum")
        for t, g in zip(total, torch.autograd.grad(loss, params, allow_unused=True)):
            if g is not None:
                t.add_(g)
        count += len(b.y)
    return _flatten(total), count


def per_sample_grads_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[B, P]`` per-sample CE gradients, one backward per example (the reference)."""
    params = [p for _, p in trainable_params(model)]
    rows = []
    for i in range(len(y)):
        loss = F.cross_entropy(model(x[i:i + 1]).float(), y[i:i + 1])
        gs = torch.autograd.grad(loss, params, allow_unused=True)
        rows.append(_flatten(torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)))
    return torch.stack(rows)


def per_sample_grads_vmap(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[B, P]`` per-sample CE gradients with torch.func (model must be in eval mode)."""
    from torch.func import functional_call, grad, vmap

    names = [n for n, _ in trainable_params(model)]
    params = {n: p.detach() for n, p in trainable_params(model)}
    rest = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    rest.update(dict(model.named_buffers()))

    def loss(p, xi, yi):
        out = functional_call(model, (p, rest), (xi.unsqueeze(0),))
        return F.cross_entropy(out.float(), yi.unsqueeze(0))

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([g[n].reshape(len(y), -1) for n in names], dim=1)


def per_sample_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torch.func per-sample gradients, falling back to the backward loop when vmap fails."""
    try:
        return per_sample_grads_vmap(model, x, y)
    except Exception as e:  # a module vmap cannot batch (custom autograd, data-dependent control flow)
        print(f"[wfisher] torch.func per-sample gradients unavailable ({type(e).__name__}: {e}); "
              "using a per-sample backward loop")
        return per_sample_grads_loop(model, x, y)


def chunk_size(num_params: int, budget: int = GRAD_CHUNK_BYTES) -> int:
    """Examples per per-sample-gradient chunk (two float32 copies of the rows fit in ``budget``)."""
    return max(1, min(256, budget // max(1, 8 * num_params)))


def iter_per_sample_grads(model: nn.Module, task: UnlearnTask, ids: np.ndarray) -> Iterator[torch.Tensor]:
    """Per-sample gradient chunks ``[t, P]`` of ``ids`` in the given order, unaugmented."""
    p = sum(q.numel() for _, q in trainable_params(model))
    for b in iterate(task.data.x, task.data.y, ids, chunk_size(p), shuffle=False, device=task.device):
        yield per_sample_grads(model, b.x, b.y)


# --- the method ----------------------------------------------------------------------------------

@torch.no_grad()
def apply_update(model: nn.Module, k: torch.Tensor, alpha: float, mask: Mask | None = None) -> None:
    """``theta <- theta + alpha * k`` over the flattened requires_grad parameters; where ``mask``
    has an entry, its False positions stay bitwise unchanged."""
    offset = 0
    for name, p in trainable_params(model):
        step = k[offset:offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
        m = None if mask is None else mask.get(name)
        new = p + alpha * step
        if m is None:
            p.copy_(new)
        else:
            p.copy_(torch.where(m.to(p.device).bool(), new, p))
    if offset != k.numel():
        raise ValueError(f"update has {k.numel()} entries, the model's trainable parameters {offset}")


def unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> None:
    """One-shot influence update ``theta += alpha * WoodFisher(v)`` (module docstring)."""
    model = task.model
    was_training = model.training
    model.eval()
    forget_ids, retain_ids = np.asarray(task.forget_ids), np.asarray(task.retain_ids)
    if len(retain_ids) == 0:
        raise ValueError("wfisher needs a non-empty retain set")
    with torch.enable_grad():
        f_sum, n_f = summed_grad(model, batches(task, forget_ids, cfg, shuffle=False, augment=False))
        r_sum, n_r = summed_grad(model, batches(task, retain_ids, cfg, shuffle=False, augment=False))
        n = n_f + n_r
        v = f_sum / n - r_sum * (n_f / (n * n_r))
        k = woodfisher_ihvp(v, iter_per_sample_grads(model, task, retain_ids[:NUM_SAMPLES]), N_W)
    if not bool(torch.isfinite(k).all()):
        raise FloatingPointError("wfisher: the WoodFisher estimate is not finite")
    apply_update(model, k, cfg.alpha, cfg.mask)
    print(f"[wfisher] n_f {n_f}  n_r {n_r}  |v| {float(v.norm()):.4g}  |k| {float(k.norm()):.4g}  "
          f"alpha {cfg.alpha:g}  |step| {abs(cfg.alpha) * float(k.norm()):.4g}")
    model.train(was_training)
