"""Training from scratch with exact resume: pretraining (main_train.py) and retraining.

SGD (momentum, weight decay) or SAM(SGD), cosine schedule with optional warm-up stepped per epoch,
augmentation on whole batches. After every epoch an atomic checkpoint holds model, optimizer,
scheduler, the batch generator's and torch's RNG states, the learning-event sums and the history;
``resume=True`` continues from it and ends bitwise equal to an uninterrupted run on the CPU.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn

from trainer.compiled import compile_for_training, failure_line
from trainer.distributed import DistInfo, all_reduce_sum_, local_slice, unwrap
from trainer.evaluate import model_accuracy
from trainer.loop import train_epoch
from trainer.optim import SamConfig, make_optimizer
from trainer.schedule import cosine_with_warmup
from trainer.step import NonFiniteLoss
from utils.batches import Batch, iterate, num_batches
from utils.data import ImageData
from utils.errors import UserError
from utils.io import atomic_torch_save, atomic_write_bytes, load_torch_file

CHECKPOINT = "checkpoint.pt"


class BatchObserver(Protocol):
    """Sees every training forward pass (e.g. the learning-event proxies of
    :mod:`memorization.learning_events`); its state travels in the checkpoint, and its ``sums`` and
    ``counts`` tensors are summed over data-parallel ranks."""

    sums: torch.Tensor
    counts: torch.Tensor

    def update(self, ids: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class Recipe:
    """What defines a training run (the pretraining recipe; retrain reuses it)."""

    epochs: int
    lr: float = 0.1
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: int = 0
    augment: bool = True
    sam: SamConfig | None = None
    optimizer: str = "sgd"
    precision: str = "fp32"  # resolved --precision of the training forward passes: fp32 | bf16


def fit(model: nn.Module, data: ImageData, train_ids: np.ndarray, recipe: Recipe, *, seed: int,
        device: torch.device, run_dir: Path | None = None, resume: bool = False,
        events: BatchObserver | None = None, val_ids: np.ndarray | None = None,
        log: Callable[[str], None] = print, desc: str = "train", dist_info: DistInfo = DistInfo(),
        compile: bool = False) -> list[dict]:
    """Train ``model`` on ``train_ids``; returns the per-epoch history.

    Under torchrun pass the DDP-wrapped model and ``dist_info``: each rank trains on its slice of
    every global batch (trainer/distributed.py) and only rank 0 writes the checkpoint.
    ``compile``: the training passes run through ``torch.compile`` (trainer/compiled.py); the
    checkpoint, evaluation and ``model`` itself stay the uncompiled module. An epoch whose
    compilation fails is redone from the state before it without compiling (one line says so)."""
    optimizer = make_optimizer(model.parameters(), recipe.optimizer, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay, sam=recipe.sam)
    scheduler = cosine_with_warmup(optimizer, recipe.epochs, recipe.warmup)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    start = 0
    ckpt_path = run_dir / CHECKPOINT if run_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        history, start = _load_checkpoint(ckpt_path, model, optimizer, scheduler, gen, events)
        log(f"resumed from {ckpt_path} at epoch {start}")
    if ckpt_path is not None and dist_info.is_main:  # the log of this run only: a fresh start drops an old one
        _write_log(run_dir, history)
    augment = data.augment if recipe.augment else None
    on_batch = ((lambda b, logits: events.update(b.ids, logits, b.y) if b.scale > 0 else None)
                if events is not None else None)
    steps = num_batches(len(train_ids), recipe.batch_size)
    train_model = compile_for_training(model, device, log) if compile else model
    for epoch in range(start, recipe.epochs):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]

        def run_epoch(m: nn.Module, epoch: int = epoch) -> dict[str, float]:
            batches = iterate(data.x, data.y, train_ids, recipe.batch_size, shuffle=True, generator=gen,
                              device=device, augment=augment)
            if dist_info.enabled:
                batches = _local_batches(batches, dist_info)
            return train_epoch(m, optimizer, batches, on_batch=on_batch, device=device, total=steps,
                               desc=f"{desc} {epoch + 1}/{recipe.epochs}", precision=recipe.precision)

        if train_model is model:
            stats = run_epoch(model)
        else:
            stats, train_model = _compiled_epoch(run_epoch, train_model, model, optimizer, gen, events, device, log)
        scheduler.step()
        if dist_info.enabled:  # on the device: NCCL reduces CUDA tensors only
            t = torch.tensor([stats["loss"], stats["acc"]], dtype=torch.float64, device=device)
            stats = dict(zip(("loss", "acc"), (all_reduce_sum_(t, dist_info) / dist_info.world).tolist()))
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": stats["loss"], "train_acc": stats["acc"],
               "seconds": time.perf_counter() - t0}
        if val_ids is not None and len(val_ids):
            row["val_acc"] = model_accuracy(unwrap(model), data, "train", val_ids, device=device)
        history.append(row)
        if not dist_info.is_main:
            continue
        log(f"{desc} epoch {epoch + 1}/{recipe.epochs} lr {lr:.4g} loss {stats['loss']:.4f} "
            f"train acc {100 * stats['acc']:.2f}%" + (f" val acc {100 * row['val_acc']:.2f}%" if "val_acc" in row else "")
            + f" ({row['seconds']:.1f}s)")
        if ckpt_path is not None:
            state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "generator": gen.get_state(),
                     "torch_rng": torch.get_rng_state(), "epoch": epoch + 1, "history": json.dumps(history)}
            if events is not None:
                state["events"] = events.state_dict()
            atomic_torch_save(ckpt_path, state)
            _write_log(run_dir, history)
    if dist_info.enabled and events is not None:
        all_reduce_sum_(events.sums, dist_info)
        all_reduce_sum_(events.counts, dist_info)
    return history


def _load_checkpoint(ckpt_path: Path, model: nn.Module, optimizer, scheduler, gen: torch.Generator,
                     events: BatchObserver | None) -> tuple[list[dict], int]:
    """Restore everything from ``ckpt_path``; returns ``(history, epochs done)``. A checkpoint that
    cannot be read or does not fit is a one-line :class:`UserError`."""
    try:
        state = load_torch_file(ckpt_path)
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if events is not None and "events" in state:
            events.load_state_dict(state["events"])
        return json.loads(state["history"]), int(state["epoch"])
    except Exception as e:  # unreadable, truncated, another model's or another recipe's checkpoint
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(f"--resume: cannot continue from {ckpt_path} ({type(e).__name__}: {first}); it is "
                        f"damaged or belongs to another model; pass --overwrite to start over") from None


def _compiled_epoch(run_epoch: Callable[[nn.Module], dict], compiled: nn.Module, model: nn.Module, optimizer,
                    gen: torch.Generator, events: BatchObserver | None, device: torch.device,
                    log: Callable[[str], None]) -> tuple[dict, nn.Module]:
    """``run_epoch(compiled)``; when it fails (other than by a non-finite loss), everything the
    epoch touched (weights, buffers, optimizer, batch generator, RNG, learning events) is put back
    as it was, one line says why, and the epoch runs on ``model`` uncompiled, which from then on
    replaces ``compiled``. Returns ``(stats, the model for the next epochs)``."""
    snap = _snapshot(model, optimizer, gen, events, device)
    try:
        return run_epoch(compiled), compiled
    except NonFiniteLoss:
        raise
    except Exception as e:  # noqa: BLE001 - dynamo/inductor raise many kinds; a real bug recurs uncompiled
        _restore(snap, model, optimizer, gen, events, device)
        log(failure_line(e))
        return run_epoch(model), model


def _snapshot(model, optimizer, gen, events, device: torch.device) -> dict:
    snap = {"model": {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict()), "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "events": copy.deepcopy(events.state_dict()) if events is not None else None}
    if torch.device(device).type == "cuda":
        snap["cuda_rng"] = torch.cuda.get_rng_state(device)
    return snap


def _restore(snap: dict, model, optimizer, gen, events, device: torch.device) -> None:
    unwrap(model).load_state_dict(snap["model"])
    optimizer.load_state_dict(snap["optimizer"])
    gen.set_state(snap["generator"])
    torch.set_rng_state(snap["torch_rng"])
    if events is not None:
        events.load_state_dict(snap["events"])
    if "cuda_rng" in snap:
        torch.cuda.set_rng_state(snap["cuda_rng"], device)


def _write_log(run_dir: Path, history: list[dict]) -> None:
    """``log.jsonl``: one JSON line per finished epoch, rewritten whole (atomically) after each
    checkpoint, so it always matches the checkpoint's history: no row doubled or lost by a kill."""
    atomic_write_bytes(run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())


def _local_batches(batches, info: DistInfo):
    """This rank's slice of each global batch, its loss scaled so that DDP's gradient average
    equals the gradient of the global batch mean."""
    for b in batches:
        n = len(b.y)
        sl = local_slice(n, info)
        k = sl.stop - sl.start
        if k == 0:  # fewer examples than ranks: contribute a zero-weight example
            sl, k = slice(0, 1), 0
        yield Batch(b.x[sl], b.y[sl], b.ids[sl], scale=info.world * k / n)
