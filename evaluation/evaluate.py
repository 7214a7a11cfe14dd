"""Evaluation of an unlearned (or retrained, or original) model on its forget set (DESIGN.md §8).

* Accuracy (fractions) on retain, forget, val, test, and on the memorization subsets
  ``high_mem`` / ``mid_mem`` / ``low_mem`` when the forget set holds them (upstream-spec §5.3-7).
* MIA-efficacy (:func:`evaluation.mia.forget_mia_efficacy`): all five SVC attacks; shadow members = the
  first |test| retain examples in ascending global-id order, shadow non-members = the test set,
  target = the forget set; the value is the fraction of the forget set predicted non-member.
  ToW-MIA uses ``mia["confidence"]``.
* ``collapsed``: retain accuracy at or below chance + 5% (:func:`evaluation.metrics.collapsed`).
* Per-example logits, labels and global ids of retain, forget, val and test for ``outputs.npz``.

Eval mode, no augmentation (DESIGN.md §7.5). Class-wise forgetting of whole classes (forget kind
``class`` without a size) evaluates test accuracy and the MIA's non-member set on the test images
of the *other* classes, as the original removed the forgotten classes from its test loader
(upstream-spec §4.5); ``test_classes_removed`` then names them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer.evaluate import predict
from utils.data import ImageData
from forget_sets.file import ForgetSet
from evaluation.metrics import accuracy, collapsed
from evaluation.mia import FEATURES, forget_mia_efficacy

SUBSETS = ("high_mem", "mid_mem", "low_mem")


@dataclass
class Evaluation:
    """``metrics``: JSON-ready ``accuracy``, ``mia``, ``collapsed`` (+ ``test_classes_removed``);
    ``outputs``: ``name -> (global ids, logits, labels)`` for :func:`utils.rundir.write_outputs`."""

    metrics: dict[str, Any]
    outputs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True) if z.size else z
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True) if e.size else e


def removed_test_classes(fs: ForgetSet) -> list[int]:
    m = fs.manifest
    if m.get("kind") == "class" and m.get("n") is None:
        return sorted(int(c) for c in (m.get("classes") or []) if int(c) >= 0)
    return []


def _float(v: float) -> float | None:
    return None if v != v else float(v)  # NaN -> null in JSON


def evaluate(model: nn.Module, data: ImageData, fs: ForgetSet, device: torch.device | str, *,
             seed: int = 0, batch_size: int = 512, mia: bool = True) -> Evaluation:
    """Accuracies, MIA-efficacy, collapse flag and per-example outputs (see the module docstring)."""
    device = torch.device(device)
    retain = np.sort(np.asarray(fs.retain_ids, np.int64))
    forget = np.asarray(fs.forget_ids, np.int64)
    train_part = np.union1d(retain, forget)
    tr_logits, tr_labels = predict(model, data.x, data.y, train_part, batch_size=batch_size, device=device)

    def take(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.searchsorted(train_part, ids)
        return ids, tr_logits[pos], tr_labels[pos]

    val = np.asarray(data.val_ids, np.int64)
    v_logits, v_labels = predict(model, data.x, data.y, val, batch_size=batch_size, device=device)
    test_ids = np.arange(len(data.test_y), dtype=np.int64)
    removed = removed_test_classes(fs)
    if removed:
        test_ids = test_ids[~np.isin(data.test_y.cpu().numpy(), removed)]
    t_logits, t_labels = predict(model, data.test_x, data.test_y, test_ids, batch_size=batch_size, device=device)

    outputs = {"retain": take(retain), "forget": take(forget), "val": (val, v_logits, v_labels),
               "test": (test_ids, t_logits, t_labels)}
    acc = {name: _float(accuracy(o[1], o[2])) if len(o[0]) else None for name, o in outputs.items()}
    for name in SUBSETS:
        ids = fs.extras.get(name)
        if ids is not None and len(ids):
            ids = np.asarray(ids, np.int64)
            inside = np.isin(ids, train_part)
            sub_logits, sub_labels = predict(model, data.x, data.y, ids, batch_size=batch_size, device=device) \
                if not inside.all() else take(ids)[1:]
            acc[name] = _float(accuracy(sub_logits, sub_labels))

    if mia and len(forget) and len(retain) and len(test_ids):
        r, f, t = outputs["retain"], outputs["forget"], outputs["test"]
        res = forget_mia_efficacy(_softmax(r[1]), r[2], _softmax(t[1]), t[2], _softmax(f[1]), f[2], seed=seed)
        mia_out = {k: _float(res[k]) for k in FEATURES}
    else:
        mia_out = {k: None for k in FEATURES}
    metrics: dict[str, Any] = {
        "accuracy": acc,
        "mia": mia_out,
        "collapsed": bool(collapsed(acc["retain"], data.num_classes)) if acc["retain"] is not None else False,
    }
    if removed:
        metrics["test_classes_removed"] = removed
    return Evaluation(metrics, outputs)


__all__ = ["Evaluation", "evaluate", "SUBSETS", "removed_test_classes"]
