"""The relearning attack: how much forget accuracy a few fine-tuning steps bring back.

Sources: the relearning evaluations of unlearning in Lynch, Guo, Ewart, Casper, Hadfield-Menell,
"Eight Methods to Evaluate Robust Unlearning in LLMs", 2024 (arXiv:2402.16835), and Hu, Fu, Wu,
Smith, "Jogging the Memory of Unlearned LLMs Through Targeted Relearning Attacks", 2024
(arXiv:2406.13356); here on image classifiers. A model that only hides the forget set (its
weights still encode it) regains accuracy on it after a few steps on a small part of it, more than
a model retrained without it does; the retrain, put through the same steps, is the reference.

Protocol (one model):

1. The forget set is split once, the same way for every model of that forget set: a fraction
   ``fraction`` of its sorted ids (a permutation drawn with ``default_rng(seed)``) is the
   *relearn* part, the rest the *held-out* part.
2. The model is fine-tuned for ``steps`` SGD steps (learning rate ``lr``, momentum 0.9, no weight
   decay, no augmentation, train mode: BatchNorm statistics update) on batches of ``batch_size``
   drawn in turn from a reshuffled relearn part; with ``on="retain"`` it is fine-tuned instead on
   as many retain examples (a control: does any fine-tuning bring the forget set back?).
3. Reported: accuracy on the held-out part before and after, the gain ``after - before``, and
   the test accuracy before and after (fine-tuning that damages the model is no relearning).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.evaluate import predict
from utils.data import ImageData

__all__ = ["RelearnConfig", "split_forget", "relearn"]


@dataclass(frozen=True)
class RelearnConfig:
    steps: int = 10
    lr: float = 0.01
    batch_size: int = 32
    fraction: float = 0.5
    on: str = "forget"  # forget | retain
    seed: int = 0


def split_forget(forget_ids: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(relearn ids, held-out ids)``, both sorted: the first ``max(1, round(fraction * n))``
    (at most n - 1) of a ``default_rng(seed)`` permutation of the sorted forget ids, and the rest."""
    ids = np.sort(np.asarray(forget_ids, np.int64))
    if len(ids) < 2:
        raise ValueError(f"the relearning attack needs at least 2 forget examples, got {len(ids)}")
    m = min(max(1, int(round(fraction * len(ids)))), len(ids) - 1)
    perm = np.random.default_rng(int(seed)).permutation(len(ids))
    return np.sort(ids[perm[:m]]), np.sort(ids[perm[m:]])


def _accuracy(model: nn.Module, data: ImageData, ids: np.ndarray, device: torch.device) -> float:
    logits, labels = predict(model, data.x, data.y, ids, device=device)
    return float((logits.argmax(1) == labels).mean()) if len(ids) else float("nan")


def _test_accuracy(model: nn.Module, data: ImageData, ids: np.ndarray, device: torch.device) -> float:
    logits, labels = predict(model, data.test_x, data.test_y, ids, device=device)
    return float((logits.argmax(1) == labels).mean()) if len(ids) else float("nan")


def relearn(model: nn.Module, data: ImageData, forget_ids: np.ndarray, retain_ids: np.ndarray,
            cfg: RelearnConfig, device: torch.device | str = "cpu") -> dict[str, float]:
    """Run the protocol of the module docstring on a copy of ``model`` (``model`` is unchanged).

    Returns ``before``, ``after`` (held-out forget accuracy, fractions), ``gain``,
    ``test_before``, ``test_after`` (test accuracy: did the steps damage the model?),
    ``n_relearn``, ``n_heldout``, ``final_loss`` (the last step's loss)."""
    device = torch.device(device)
    relearn_ids, held = split_forget(forget_ids, cfg.fraction, cfg.seed)
    if cfg.on == "retain":
        pool = np.sort(np.asarray(retain_ids, np.int64))
        pick = np.random.default_rng(int(cfg.seed) + 1).permutation(len(pool))[:len(relearn_ids)]
        train_ids = np.sort(pool[pick])
    elif cfg.on == "forget":
        train_ids = relearn_ids
    else:
        raise ValueError(f"on must be 'forget' or 'retain', got {cfg.on!r}")
    m = copy.deepcopy(model).to(device)
    before = _accuracy(m, data, held, device)
    test_ids = np.arange(len(data.test_y), dtype=np.int64)
    test_before = _test_accuracy(m, data, test_ids, device)
    opt = torch.optim.SGD(m.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=0.0)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    ids_t = torch.as_tensor(train_ids)
    bs = max(1, min(int(cfg.batch_size), len(ids_t)))
    order, pos, loss = torch.randperm(len(ids_t), generator=gen), 0, torch.tensor(float("nan"))
    m.train()
    for _ in range(int(cfg.steps)):
        if pos + bs > len(order):
            order, pos = torch.randperm(len(ids_t), generator=gen), 0
        gid = ids_t[order[pos:pos + bs]].to(data.x.device)
        pos += bs
        xb = data.x[gid].to(device).float().div_(255)
        yb = data.y[gid].to(device)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(xb).float(), yb)
        loss.backward()
        opt.step()
    after = _accuracy(m, data, held, device)
    return {"before": before, "after": after, "gain": after - before, "test_before": test_before,
            "test_after": _test_accuracy(m, data, test_ids, device), "n_relearn": int(len(train_ids)),
            "n_heldout": int(len(held)), "final_loss": float(loss.detach())}
