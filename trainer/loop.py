"""The one training loop: an epoch of cross-entropy steps over batches (plain or SAM, masked or not).

Pretraining, retraining and every fine-tuning unlearning method run through :func:`train_epoch`
(methods with other losses pass ``loss_fn``).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from trainer.device import autocast
from trainer.mask import Mask
from trainer.step import optimizer_step
from utils.batches import Batch

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Batch], *,
                loss_fn: LossFn = F.cross_entropy, trainable: Mask | None = None,
                on_batch: Callable[[Batch, torch.Tensor], None] | None = None,
                device: torch.device | str = "cpu", total: int | None = None,
                desc: str = "train", precision: str = "fp32") -> dict[str, float]:
    """One pass (forward passes under ``precision``, fp32 or bf16 autocast); returns mean loss and
    accuracy (fraction) of the clean forward passes.
    ``on_batch(batch, logits)`` sees the clean logits of each step (learning-event proxies)."""
    device = torch.device(device)
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    for b in tqdm(batches, total=total, desc=desc, leave=False, disable=None):
        def closure(b=b):
            with autocast(device, precision):
                out = model(b.x)
            loss = loss_fn(out.float(), b.y)
            return (loss * b.scale if b.scale != 1.0 else loss), out
        loss, logits = optimizer_step(model, optimizer, closure, trainable=trainable)
        if b.scale != 1.0:
            loss = loss / b.scale
        if on_batch is not None:
            on_batch(b, logits)
        n = len(b.y)
        loss_sum += loss * n
        correct += (logits.argmax(1) == b.y).sum()
        seen += n
    seen = max(seen, 1)
    return {"loss": float(loss_sum) / seen, "acc": float(correct) / seen}
