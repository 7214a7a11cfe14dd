"""The memorization proxies that need extra computation: holdout retraining and loss curvature.

Both return one value per training id; both rise with memorization. (The four learning-event
proxies are recorded for free while pretraining: memorization/learning_events.py; the registry of
all six is memorization/proxies.py.)

Holdout retraining (``ho_ret``; Carlini et al. 2019, as the RUM code computes it): a copy of the
trained model is fine-tuned on held-out data, the TEST set as in the RUM code (the validation split
is left alone so that model selection stays clean), for up to ``--ft_epochs`` epochs at
``--ft_lr`` with SGD (momentum, weight decay, constant learning rate, no augmentation), stopping
early after 4 epochs without improvement of the epoch's running loss; the model at the stop is
used. Score = symmetric KL ½[KL(p_orig‖p_ft) + KL(p_ft‖p_orig)] between the eval-mode softmax of
the original and of the fine-tuned model on each training example, probabilities clamped at 1e-10.

Loss curvature (Garg et al. 2023): a model is trained from scratch with the pretraining recipe; after
every epoch, for every training example in eval mode, with g = ∇ₓℓ(x),
z = h·sign(g)/‖sign(g)‖₂ and score = ‖∇ₓ[ℓ(x + z) − ℓ(x)]‖₂ (z held constant). x is the model's
input in [0, 1] (models normalize inside). The proxy is the mean over epochs; the per-epoch values
are kept too.
"""
from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.evaluate import predict
from trainer.fit import Recipe
from trainer.loop import train_epoch
from trainer.optim import make_optimizer
from trainer.schedule import cosine_with_warmup
from utils.batches import iterate
from utils.data import ImageData

HO_RET_PATIENCE = 4
PROB_FLOOR = 1e-10


def symmetric_kl(logits_a: np.ndarray | torch.Tensor, logits_b: np.ndarray | torch.Tensor,
                 floor: float = PROB_FLOOR) -> np.ndarray:
    """½[KL(p_a‖p_b) + KL(p_b‖p_a)] per row of two [n, C] logit arrays (float64), probabilities
    clamped at ``floor``."""
    a = torch.as_tensor(np.asarray(logits_a), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(logits_b), dtype=torch.float64)
    pa = torch.softmax(a, 1).clamp_min(floor)
    pb = torch.softmax(b, 1).clamp_min(floor)
    la, lb = pa.log(), pb.log()
    return (0.5 * ((pa * (la - lb)).sum(1) + (pb * (lb - la)).sum(1))).numpy()


def holdout_retraining(model: nn.Module, data: ImageData, train_ids: np.ndarray, *, epochs: int, lr: float,
                       momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 256,
                       seed: int = 0, device: torch.device | str = "cpu", patience: int = HO_RET_PATIENCE,
                       log: Callable[[str], None] | None = print) -> tuple[np.ndarray, dict]:
    """``ho_ret`` of ``train_ids`` (float64, aligned to them) and a small report
    (epochs run, final running loss). ``data`` must live on ``device``; ``model`` is not changed."""
    device = torch.device(device)
    ft = copy.deepcopy(model)
    opt = make_optimizer(ft.parameters(), "sgd", lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    hold = np.arange(len(data.test_y), dtype=np.int64)
    best, stale, ran, loss = float("inf"), 0, 0, float("nan")
    t0 = time.perf_counter()
    for epoch in range(int(epochs)):
        batches = iterate(data.test_x, data.test_y, hold, batch_size, shuffle=True, generator=gen, device=device)
        loss = train_epoch(ft, opt, batches, device=device, desc=f"ho_ret {epoch + 1}/{epochs}")["loss"]
        ran = epoch + 1
        if log is not None:
            log(f"ho_ret fine-tune epoch {ran}/{epochs} running loss {loss:.4f}")
        if loss < best:
            best, stale = loss, 0
        else:
            stale += 1
            if stale >= patience:
                if log is not None:
                    log(f"ho_ret: stopped early after {ran} epochs ({patience} without improvement)")
                break
    orig, _ = predict(model, data.x, data.y, train_ids, device=device)
    tuned, _ = predict(ft, data.x, data.y, train_ids, device=device)
    return symmetric_kl(orig, tuned), {"epochs_run": ran, "final_loss": loss,
                                       "seconds": time.perf_counter() - t0}


def curvature_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:
    """Per-example ‖∇ₓ[ℓ(x + z) − ℓ(x)]‖₂ with z = h·sign(∇ₓℓ)/‖sign(∇ₓℓ)‖₂ ([B], detached).

    Examples must not interact (call in eval mode). An example with a zero input gradient gets
    z = 0 and score 0."""
    x = x.detach().clone().requires_grad_(True)

    def logits(v):
        out = model(v)
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out

    with torch.enable_grad():
        loss = F.cross_entropy(logits(x), y, reduction="none")
        (g,) = torch.autograd.grad(loss.sum(), x, retain_graph=True)
        s = torch.sign(g)
        norm = s.flatten(1).norm(dim=1).clamp_min(1e-12)
        z = (h * s / norm.view(-1, *([1] * (x.dim() - 1)))).detach()
        loss_pos = F.cross_entropy(logits(x + z), y, reduction="none")
        (gd,) = torch.autograd.grad((loss_pos - loss).sum(), x)
    return gd.flatten(1).norm(dim=1).detach()


def curvature_pass(model: nn.Module, data: ImageData, ids: np.ndarray, h: float, *,
                   batch_size: int = 256, device: torch.device | str = "cpu") -> np.ndarray:
    """:func:`curvature_batch` over ``ids`` of the training split in eval mode (float64 [n])."""
    device = torch.device(device)
    was = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    out = []
    try:
        for b in iterate(data.x, data.y, ids, batch_size, device=device):
            out.append(curvature_batch(model, b.x, b.y, h).double().cpu())
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.train(was)
    return torch.cat(out).numpy() if out else np.zeros(0)


def loss_curvature(model: nn.Module, data: ImageData, train_ids: np.ndarray, recipe: Recipe, *, h: float,
                   seed: int, device: torch.device | str = "cpu",
                   log: Callable[[str], None] | None = print) -> tuple[np.ndarray, np.ndarray]:
    """Train ``model`` (freshly initialized, on ``device``) with ``recipe`` on ``train_ids`` as
    :func:`trainer.fit.fit` does (same batch generator seeded with ``seed``), computing the
    curvature of every training id after every epoch. Returns ``(mean over epochs [n],
    per epoch [E, n])``, aligned to ``train_ids``."""
    device = torch.device(device)
    opt = make_optimizer(model.parameters(), recipe.optimizer, lr=recipe.lr, momentum=recipe.momentum,
                         weight_decay=recipe.weight_decay, sam=recipe.sam)
    sched = cosine_with_warmup(opt, recipe.epochs, recipe.warmup)
    gen = torch.Generator().manual_seed(int(seed))
    augment = data.augment if recipe.augment else None
    per_epoch = []
    for epoch in range(recipe.epochs):
        t0 = time.perf_counter()
        batches = iterate(data.x, data.y, train_ids, recipe.batch_size, shuffle=True, generator=gen,
                          device=device, augment=augment)
        stats = train_epoch(model, opt, batches, device=device, desc=f"curvature {epoch + 1}/{recipe.epochs}",
                            precision=recipe.precision)
        sched.step()
        per_epoch.append(curvature_pass(model, data, train_ids, h, batch_size=max(recipe.batch_size, 256),
                                        device=device))
        if log is not None:
            log(f"curvature epoch {epoch + 1}/{recipe.epochs} loss {stats['loss']:.4f} train acc "
                f"{100 * stats['acc']:.2f}% mean curvature {per_epoch[-1].mean():.4g} "
                f"({time.perf_counter() - t0:.1f}s)")
    arr = np.stack(per_epoch)
    return arr.mean(0), arr
