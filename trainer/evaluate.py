"""Evaluation: per-example logits in eval mode, never augmented (DESIGN.md §7.5, §8).

Always float32 (no autocast, DESIGN.md §5), under ``torch.inference_mode`` (no autograd records at
all), in large batches (:func:`eval_batch_size`: 1024 CIFAR-sized images) fed in channels_last, the
layout the trainer keeps its models in, converted while still uint8; the logits stay on the device
until the end (one copy to the host, no synchronization per batch on CUDA). The outputs equal a
plain ``model.eval()`` / ``no_grad`` loop over float NCHW batches of 512 (tests/trainer/
test_evaluate_pass.py)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from utils.batches import iterate
from utils.data import ImageData

# Input values per evaluation batch: 1024 images of 3 x 32 x 32; larger images get fewer per batch.
EVAL_VALUES = 1024 * 3 * 32 * 32
MIN_EVAL_BATCH, MAX_EVAL_BATCH = 64, 1024


def eval_batch_size(shape) -> int:
    """Images per evaluation batch for images of ``shape`` ``[N, C, H, W]`` (or any ``[N, ...]``):
    1024 for CIFAR (3 x 32 x 32), fewer for larger images (64 for 3 x 224 x 224), at least 64.
    In eval mode under inference_mode only one layer's activations live at a time."""
    per = int(np.prod(tuple(shape)[1:], dtype=np.int64)) if len(shape) > 1 else 1
    return int(max(MIN_EVAL_BATCH, min(MAX_EVAL_BATCH, EVAL_VALUES // max(per, 1))))


def _empty_logits(model: nn.Module) -> np.ndarray:
    n_out = getattr(getattr(model, "fc", None), "out_features", 0)
    return np.zeros((0, n_out), np.float32)


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray, *,
            batch_size: int | None = None, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Logits (float32 [N, C]) and labels of the examples ``ids`` of ``x``/``y`` (``x`` uint8
    [N, C, H, W] on any device, or :class:`utils.lazy_images.LazyImages`). ``batch_size`` None:
    :func:`eval_batch_size`."""
    device = torch.device(device)
    ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    labels = y[ids_t.to(y.device)].cpu().numpy() if len(ids_t) else np.zeros(0, np.int64)
    if not len(ids_t):
        return _empty_logits(model), labels
    bs = int(batch_size) if batch_size else eval_batch_size(x.shape)
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.autocast(device.type, enabled=False):  # float32 even inside a caller's autocast
            for start in range(0, len(ids_t), bs):
                xb = x[ids_t[start:start + bs].to(x.device)].to(device, non_blocking=True)
                if xb.dim() == 4:  # the model's layout, converted while 4x smaller (uint8)
                    xb = xb.contiguous(memory_format=torch.channels_last)
                outs.append(model(xb.float().div_(255)).float())
    finally:
        model.train(was_training)
    return torch.cat(outs).cpu().numpy(), labels


def predict_split(model: nn.Module, data: ImageData, split: str, ids: np.ndarray | None = None, *,
                  batch_size: int | None = None, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
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
