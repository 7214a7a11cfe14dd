"""Evaluation: per-example logits in eval mode, never augmented (DESIGN.md §7.5, §8)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from utils.batches import iterate
from utils.data import ImageData


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray, *,
            batch_size: int = 512, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Logits (float32 [N, C]) and labels of the examples ``ids`` of ``x``/``y``."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for b in iterate(x, y, ids, batch_size, device=device):
        out = model(b.x)  # always float32 (DESIGN.md §5)
        logits.append(out.float().cpu())
        labels.append(b.y.cpu())
    model.train(was_training)
    if not logits:
        n_out = getattr(getattr(model, "fc", None), "out_features", 0)
        return np.zeros((0, n_out), np.float32), np.zeros(0, np.int64)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def predict_split(model: nn.Module, data: ImageData, split: str, ids: np.ndarray | None = None, *,
                  batch_size: int = 512, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """``split`` is ``"test"`` (ids default to all test images) or ``"train"`` (ids required)."""
    if split == "test":
        ids = np.arange(len(data.test_y)) if ids is None else ids
        return predict(model, data.test_x, data.test_y, ids, batch_size=batch_size, device=device)
    return predict(model, data.x, data.y, ids, batch_size=batch_size, device=device)


@torch.no_grad()
def embed(model: nn.Module, data: ImageData, ids: np.ndarray, *, device: torch.device | str,
          batch_size: int = 512) -> np.ndarray:
    """``model.embed`` features of the training examples ``ids`` (eval mode, no augmentation,
    float32 forward on every device: the one embedding both ES paths use); float64 ``[N, D]``."""
    device = torch.device(device)
    was = model.training
    model.eval()
    out = [model.embed(b.x).float().cpu()
           for b in iterate(data.x, data.y, np.asarray(ids, np.int64), batch_size, device=device)]
    model.train(was)
    if not out:
        return np.zeros((0, int(getattr(model, "embed_dim", 0))), np.float64)
    return torch.cat(out).double().numpy()


def model_accuracy(model: nn.Module, data: ImageData, split: str, ids: np.ndarray | None = None, **kw) -> float:
    logits, labels = predict_split(model, data, split, ids, **kw)
    return float((logits.argmax(1) == labels).mean()) if len(labels) else float("nan")
