"""Pretraining (SGD or SAM) -> <save_dir or ckpts/original>/<run>/.

    python main_train.py --dataset digits --arch cnn_s --epochs 30 --lr 0.1 --batch_size 64
    python main_train.py --dataset CIFAR10 --arch ResNet18 --epochs 50 --lr 0.1 --batch_size 256 \
        --save_dir ckpts/original/ --data datasets [--sam min --rho 1.0 --lamb 1 --adaptive]

Writes config.json, model.pt, metrics.json, outputs.npz (per-example logits on the training split,
val and test), proxies.npz (learning-event memorization proxies by global id) and log.jsonl.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from arg_parser import parse_args
from models import build_model
from trainer.device import prepare_model, resolve_device
from trainer.distributed import finish, init_distributed, unwrap, wrap_model
from trainer.evaluate import predict_split
from trainer.fit import CHECKPOINT, Recipe, fit
from utils.rundir import (check_writable, prepare_run_dir, run_config, save_model, write_config,
                             write_metrics, write_outputs)
from utils.cli import run_main
from utils.data import load_data
from utils.errors import UserError
from utils.io import atomic_save_npz
from memorization.learning_events import LearningEvents
from utils.pretrained import pretrain_dir, pretrain_name, sam_config


def device_from_args(args, local_rank: int | None = None) -> torch.device:
    dev = resolve_device(args.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", args.gpu if local_rank is None else local_rank)
    return dev


def main() -> int:
    args = parse_args(prog="main_train.py")
    run_dir = pretrain_dir(args)
    if args.checkpoint:
        ck = Path(args.checkpoint)
        run_dir = ck.parent if ck.is_file() else ck
    check_writable(run_dir)
    if args.resume and not (run_dir / CHECKPOINT).is_file():
        raise UserError(f"--resume: no checkpoint to resume from at {run_dir / CHECKPOINT}")
    info = init_distributed(resolve_device(args.device).type)
    device = device_from_args(args, info.local_rank if info.enabled else None)
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    torch.manual_seed(args.train_seed if args.train_seed is not None else args.seed)
    model = build_model(args.arch, data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                        mean=data.mean, std=data.std, imagenet_arch=args.imagenet_arch)
    if info.is_main:
        run_dir = prepare_run_dir(run_dir, overwrite=args.overwrite, resume=args.resume)
        write_config(run_dir, run_config(args, stage="pretrain", run_name=pretrain_name(args),
                                         num_train=len(data.train_ids), num_val=len(data.val_ids),
                                         world_size=info.world))
    if info.enabled:
        torch.distributed.barrier()
    model = wrap_model(prepare_model(model, device), info, device)
    recipe = Recipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, momentum=args.momentum,
                    weight_decay=args.weight_decay, warmup=args.warmup, augment=not args.no_aug,
                    sam=sam_config(args))
    events = LearningEvents(len(data.x), device)
    if info.is_main:
        print(f"pretraining {args.arch} on {args.dataset} ({len(data.train_ids)} train, {len(data.val_ids)} val, "
              f"{len(data.test_y)} test) on {device}" + (f" x{info.world} ranks" if info.enabled else "")
              + f" -> {run_dir}")
    t0 = time.perf_counter()
    history = fit(model, data.to(device), data.train_ids, recipe, seed=args.seed, device=device, run_dir=run_dir,
                  resume=args.resume, events=events, val_ids=data.val_ids, desc="pretrain", dist_info=info)
    train_seconds = time.perf_counter() - t0
    if not info.is_main:
        finish(info)
    model = unwrap(model)

    splits, metrics = {}, {}
    for name, split, ids in (("train", "train", data.train_ids), ("val", "train", data.val_ids),
                             ("test", "test", None)):
        logits, labels = predict_split(model, data, split, ids, device=device)
        ids = np.arange(len(labels)) if ids is None else ids
        splits[name] = (ids, logits, labels)
        metrics[f"{name}_acc"] = float((logits.argmax(1) == labels).mean())
    write_outputs(run_dir, splits)
    atomic_save_npz(run_dir / "proxies.npz", ids=data.train_ids, **events.means(data.train_ids))
    save_model(run_dir, model, arch=args.arch, num_classes=data.num_classes, dataset=args.dataset)
    metrics.update(epochs=args.epochs, train_seconds=train_seconds, history=history)
    write_metrics(run_dir, metrics)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    print(f"done: train {100 * metrics['train_acc']:.2f}%  val {100 * metrics['val_acc']:.2f}%  "
          f"test {100 * metrics['test_acc']:.2f}%  ({train_seconds:.1f}s) -> {run_dir}")
    finish(info)  # data-parallel: wait for the other ranks and exit (no-op in one process)
    return 0


if __name__ == "__main__":
    run_main(main)
