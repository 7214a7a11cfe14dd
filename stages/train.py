"""main_train.py: pretraining (SGD or SAM) -> ``<save_dir or ckpts/original>/<run>/`` (docs/stage_train.md).

Writes config.json, model.pt, metrics.json, outputs.npz (per-example logits on the training split,
val and test), proxies.npz (learning-event memorization proxies by global id, recorded by a
:class:`memorization.learning_events.LearningEvents` observer of every training batch) and log.jsonl.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from memorization.learning_events import LearningEvents
from models import build_for
from stages.common import finished_run, refuse_other_unfinished, wandb_run
from stages.configs import device, pretrain_dir, pretrain_identity, pretrain_name, pretrain_recipe, train_seed
from trainer.device import prepare_model, resolve_device
from trainer.distributed import DistInfo, finish, init_distributed, unwrap, wrap_model
from trainer.evaluate import predict_split
from trainer.fit import CHECKPOINT, fit
from utils.data import ImageData, augment_record, load_data
from utils.errors import UserError
from utils.lock import release, run_lock
from utils.io import atomic_save_npz
from utils.paths import MODEL_FILE, learning_event_proxy_path
from utils.rundir import (check_writable, commit_run_dir, is_complete, prepare_run_dir, run_config, save_model, write_config,
                          write_metrics, write_outputs)


def run_dir_of(args: argparse.Namespace) -> Path:
    """Where the run goes: ``--checkpoint``'s directory when given (a new directory, or a killed run
    to continue with ``--resume``), else :func:`pretrain_dir`. Refused when it cannot be written or
    holds a run started with other settings. ``--resume`` without a checkpoint there starts from
    the beginning (``--checkpoint`` naming none is refused)."""
    run_dir, flag = pretrain_dir(args), "--resume"
    if args.checkpoint:
        ck, flag = Path(args.checkpoint), "--checkpoint"
        run_dir = ck.parent if ck.is_file() else ck
    check_writable(run_dir, flag if args.checkpoint else "--save_dir")
    started = _run_name_in(run_dir)
    if started is not None and started != pretrain_name(args):
        raise UserError(f"{flag}: {run_dir} holds the run {started}, started with other settings than these "
                        f"({pretrain_name(args)}); " + ("resume it with its own flags" if args.resume else
                                                        "choose another directory"))
    if not args.resume or is_complete(run_dir):
        return run_dir  # a finished run: stages.common.finished_run decides
    if not (run_dir / CHECKPOINT).is_file():
        if args.checkpoint:
            raise UserError(f"--checkpoint: no checkpoint to resume from at {run_dir / CHECKPOINT}")
        refuse_other_unfinished(run_dir, _same_model_runs(args, run_dir.parent), "pretraining")
        print(f"main_train.py: --resume: no checkpoint at {run_dir / CHECKPOINT} (killed before its first epoch "
              f"ended, or never started): starting from the beginning")
        args.resume = False
    return run_dir


def _same_model_runs(args: argparse.Namespace, root: Path) -> list[Path]:
    """Run directories under ``root`` of the same dataset, architecture, optimizer and seed (other
    settings may differ): what a ``--resume`` with changed flags would have meant to continue."""
    want = {k: v for k, v in pretrain_identity(args).items() if k in ("dataset", "arch", "optimizer", "seed")}
    out = []
    for d in (p for p in root.iterdir() if p.is_dir()) if root.is_dir() else ():
        try:
            ident = json.loads((d / "config.json").read_text()).get("identity") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if all(ident.get(k) == v for k, v in want.items()):
            out.append(d)
    return out


def _run_name_in(run_dir: Path) -> str | None:
    """The run name recorded in ``run_dir/config.json`` (None when there is none to read)."""
    try:
        return json.loads((run_dir / "config.json").read_text()).get("run_name")
    except (OSError, ValueError, AttributeError):
        return None


def start_run(args: argparse.Namespace, run_dir: Path, data: ImageData, info: DistInfo) -> Path:
    """Rank 0 prepares the run directory and writes config.json (a resumed run keeps the one it
    started with); the other ranks wait for it."""
    if info.is_main:
        run_dir = prepare_run_dir(run_dir, overwrite=args.overwrite, resume=args.resume)
        if not (args.resume and (run_dir / "config.json").is_file()):
            write_config(run_dir, run_config(vars(args), stage="pretrain", run_name=pretrain_name(args),
                                             identity=pretrain_identity(args),
                                             augmentation=augment_record(data, not args.no_aug),
                                             num_train=len(data.train_ids), num_val=len(data.val_ids),
                                             world_size=info.world))
    if info.enabled:
        torch.distributed.barrier()
    return run_dir


def write_results(args: argparse.Namespace, run_dir: Path, model: nn.Module, data: ImageData,
                  events: LearningEvents, dev: torch.device, history: list[dict], train_seconds: float) -> dict:
    """outputs.npz (logits on train, val and test), proxies.npz, model.pt and metrics.json; the
    resume checkpoint is removed. Returns the metrics. The per-example pass is
    :func:`trainer.evaluate.predict_split` (float32, inference mode, large batches); ``data`` is
    best the copy on ``dev`` that training used."""
    splits, metrics = {}, {}
    for name, split, ids in (("train", "train", data.train_ids), ("val", "train", data.val_ids),
                             ("test", "test", None)):
        logits, labels = predict_split(model, data, split, ids, device=dev)
        ids = np.arange(len(labels)) if ids is None else ids
        splits[name] = (ids, logits, labels)
        # an empty split (a validation split of fewer than 10 examples per class) has no accuracy
        metrics[f"{name}_acc"] = float((logits.argmax(1) == labels).mean()) if len(labels) else None
    write_outputs(run_dir, splits)
    atomic_save_npz(learning_event_proxy_path(run_dir / MODEL_FILE), ids=data.train_ids,
                    **events.means(data.train_ids))
    save_model(run_dir, model, arch=args.arch, num_classes=data.num_classes, dataset=args.dataset)
    metrics.update(epochs=args.epochs, train_seconds=train_seconds, history=history)
    write_metrics(run_dir, metrics)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    return metrics


def run(args: argparse.Namespace) -> int:
    """``main_train.py``: pretrain ``--arch`` on ``--dataset`` (data-parallel under torchrun). One
    writer per run directory (:func:`utils.lock.run_lock`)."""
    run_dir = run_dir_of(args)
    if finished_run(run_dir, args, "main_train.py", ("data", "training", "sam"), pretrain_identity(args)):
        return 0
    info = init_distributed(resolve_device(args.device).type)
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    with run_lock(run_dir, enabled=info.is_main):
        if finished_run(run_dir, args, "main_train.py", ("data", "training", "sam"), pretrain_identity(args)):
            return 0  # finished by another run while this one started
        return _train(args, run_dir, data, info)


def _train(args: argparse.Namespace, run_dir: Path, data: ImageData, info: DistInfo) -> int:
    dev = device(args, info.local_rank if info.enabled else None)
    torch.manual_seed(train_seed(args))
    model = build_for(args.arch, data, imagenet_arch=args.imagenet_arch)
    final, run_dir = run_dir, start_run(args, run_dir, data, info)
    model = wrap_model(prepare_model(model, dev), info, dev)
    events = LearningEvents(len(data.x), dev)
    if info.is_main:
        print(f"pretraining {args.arch} on {args.dataset} ({len(data.train_ids)} train, {len(data.val_ids)} val, "
              f"{len(data.test_y)} test) on {dev}" + (f" x{info.world} ranks" if info.enabled else "")
              + f" -> {final}")
    t0 = time.perf_counter()
    dev_data = data.to(dev)  # once: training and the post-training pass read the images there
    history = fit(model, dev_data, data.train_ids, pretrain_recipe(args), seed=args.seed, device=dev,
                  run_dir=run_dir, resume=args.resume, events=events, val_ids=data.val_ids, desc="pretrain",
                  dist_info=info, compile=bool(getattr(args, "compile", False)))
    train_seconds = time.perf_counter() - t0
    if not info.is_main:
        finish(info)
    model = unwrap(model)
    metrics = write_results(args, run_dir, model, dev_data, events, dev, history, train_seconds)
    run_dir = commit_run_dir(run_dir, final)  # --overwrite: the finished run is replaced only now
    val = "n/a" if metrics["val_acc"] is None else f"{100 * metrics['val_acc']:.2f}%"
    print(f"done: train {100 * metrics['train_acc']:.2f}%  val {val}  "
          f"test {100 * metrics['test_acc']:.2f}%  ({train_seconds:.1f}s) -> {run_dir}")
    wb = wandb_run(args, pretrain_name(args), group=f"{args.arch}-{args.dataset}-pretrain")
    if wb is not None:  # the W&B mirror of log.jsonl and metrics.json (--wandb-*), once the run is complete
        for row in history:
            wb.log(row)
        wb.finish({k: v for k, v in metrics.items() if k != "history"})
    release(run_dir)  # before finish: under torchrun it ends the process with os._exit
    finish(info)  # data-parallel: wait for the other ranks and exit (no-op in one process)
    return 0
