"""Memorization scores (the subsampled estimator) and memorization proxies -> <ckpts>/memorization/.

    python main_memorization.py --dataset digits --arch mlp --num_models 128 --epochs 20 --lr 0.1 --batch_size 64
    python main_memorization.py ... --shard 0 --num_shards 4     # one array task per shard
    python main_memorization.py ... --merge --num_shards 4       # then combine them
    python main_memorization.py --dataset digits --arch mlp --epochs 20 --lr 0.1 --batch_size 64 \\
        --proxies ho_ret,curvature                                # proxies of the pretrained model

Estimator (memorization/estimator.py): ``--num_models`` K models of ``--arch`` trained with the recipe
flags as given (``--epochs`` keeps the parser's default of 50: pass a small value for small data),
each on a random ``--subset_ratio`` of the training split, never augmented (RUM and Feldman &
Zhang train their estimator models without augmentation), trained together as batched ensembles
(trainer/ensemble.py). Writes ``<dataset>_memorization.npz`` (key ``memorization``, read by
``--mem``) and ``<dataset>_memorization_summary.json``: the mean score of the high/mid/low groups
(size ``--num_indexes_to_replace``, default 10% of the training split) and the Spearman correlation
of every memorization proxy found (the pretrained run's ``proxies.npz``, from ``--proxy_file``,
``--mask`` or the run the same arguments point to, and this directory's
``<dataset>_<arch>_proxies.npz``) with the scores.

Proxies (memorization/proxies.py): ``--proxies ho_ret,curvature`` computes holdout retraining from the
pretrained model (``--mask`` or the default run; ``--ft_epochs``, ``--ft_lr``) and loss curvature
from a fresh training run with the pretraining recipe (``--h``) into
``<dataset>_<arch>_proxies.npz`` (``ids`` + one array per proxy, existing proxies kept).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from arg_parser import parse_args
from models import build_model
from trainer.device import prepare_model, resolve_device
from trainer.ensemble import auto_chunk, correctness, train_models
from trainer.fit import Recipe
from utils.rundir import check_writable
from utils.cli import run_main
from utils.data import load_data
from utils.errors import UserError
from memorization.proxies import PROXY_SIGN
from utils.io import atomic_save_npz, atomic_write_json
from memorization.estimator import (describe_ids, group_means, load_progress, merge_progress, new_progress,
                                recipe_mismatch, save_progress, score_path, shard_models, shard_path,
                                spearman, subset_size, summary_path, write_scores)
from utils.pretrained import default_pretrained, load_into, resolve_model_file, sam_config
from memorization.proxies import COMPUTED_PROXIES, LEARNING_EVENT_PROXIES, holdout_retraining, loss_curvature
from memorization.scores import find_score_file, load_scores, score_key

SMALL_ARCHS = ("mlp", "cnn_s")


def device_from_args(args) -> torch.device:
    dev = resolve_device(args.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", args.gpu)
    return dev


def cpu_threads(device: torch.device) -> None:
    """On a CPU busier than its cores (1-minute load average above the core count), train with one
    intra-op thread: threads of one process then spin-wait on each other and a step of these small
    models measured 3-5x slower with 2 threads than with 1 on the shared 2-core test machine."""
    if device.type != "cpu" or torch.get_num_threads() <= 1 or not hasattr(os, "getloadavg"):
        return
    load, cores = os.getloadavg()[0], len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if load > (cores or 1):
        torch.set_num_threads(1)
        print(f"note: the CPU is busy (load {load:.1f} on {cores} cores): using 1 thread")


def check_args(args: argparse.Namespace) -> None:
    """Everything about the flags that can be refused before any work."""
    if args.proxies is not None:
        if not args.proxies:
            raise UserError(f"--proxies: no proxy named; accepted: {', '.join(COMPUTED_PROXIES)}")
        for name in args.proxies:
            if name in LEARNING_EVENT_PROXIES:
                raise UserError(f"--proxies {name}: the learning-event proxies ({', '.join(LEARNING_EVENT_PROXIES)}) "
                                f"are recorded by main_train.py in the run's proxies.npz; accepted here: "
                                f"{', '.join(COMPUTED_PROXIES)}")
            if name not in COMPUTED_PROXIES:
                raise UserError(f"--proxies {name!r}: unknown proxy; accepted: {', '.join(COMPUTED_PROXIES)}")
        if args.merge or args.shard is not None:
            raise UserError("--proxies computes proxies only; run the estimator (--shard/--merge) without it")
        if "ho_ret" in args.proxies:
            if args.ft_epochs < 1:
                raise UserError(f"--ft_epochs {args.ft_epochs}: must be an integer >= 1")
            if args.ft_lr < 0:
                raise UserError(f"--ft_lr {args.ft_lr}: must be >= 0")
        if "curvature" in args.proxies and not args.h > 0:
            raise UserError(f"--h {args.h}: must be > 0")
    if args.merge and args.shard is not None:
        raise UserError(f"--merge combines all {args.num_shards} shards; do not pass --shard")
    if args.proxies is None and not args.merge and args.shard is None and args.num_shards > 1:
        raise UserError(f"--num_shards {args.num_shards} without --shard: pass --shard i (0..{args.num_shards - 1}) "
                        f"to train one shard, or --merge to combine them")
    if args.proxy_file is not None and not Path(args.proxy_file).is_file():
        raise UserError(f"--proxy_file {args.proxy_file}: no such file")


def main() -> int:
    args = parse_args(prog="main_memorization.py")
    check_args(args)
    out_dir = Path(args.ckpts) / "memorization"
    check_writable(out_dir, "--ckpts")
    if args.proxies is not None:
        return run_proxies(args, out_dir)
    if args.merge:
        return run_merge(args, out_dir)
    return run_estimator(args, out_dir)


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------

def estimator_manifest(args: argparse.Namespace, data) -> dict:
    return {
        "dataset": args.dataset, "arch": args.arch, "imagenet_arch": bool(args.imagenet_arch),
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "momentum": args.momentum,
        "weight_decay": args.weight_decay, "warmup": args.warmup, "augment": False,
        "subset_ratio": args.subset_ratio, "num_models": args.num_models, "seed": args.seed,
        "split_seed": args.split_seed, "num_examples": int(len(data.x)), "num_train": int(len(data.train_ids)),
        "subset_size": subset_size(len(data.train_ids), args.subset_ratio), "num_shards": args.num_shards,
        "estimator": "subsampled heldout (Feldman & Zhang 2020)",
    }


def run_estimator(args: argparse.Namespace, out_dir: Path) -> int:
    sharded = args.shard is not None
    shard, n_shards = (args.shard, args.num_shards) if sharded else (0, 1)
    final = score_path(out_dir, args.dataset)
    if not sharded and final.is_file() and not args.overwrite:
        raise UserError(f"{final} already holds memorization scores; pass --overwrite to recompute them")
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    device = device_from_args(args)
    cpu_threads(device)
    manifest = estimator_manifest(args, data)
    prog_path = shard_path(out_dir, args.dataset, shard, n_shards)
    prog = None
    if prog_path.is_file() and not args.overwrite:
        prog = load_progress(prog_path)
        diff = recipe_mismatch(prog.manifest, manifest)
        if diff:
            raise UserError(f"{prog_path} holds models of other settings ({'; '.join(diff)}, found vs asked); "
                            f"pass --overwrite to discard it")
    if prog is None:
        prog = new_progress(manifest, data.train_ids)
    mine = shard_models(args.num_models, shard, n_shards)
    todo = [int(k) for k in mine if not prog.done[k]]
    where = f"shard {shard} of {n_shards}: " if sharded else ""
    print(f"memorization: {args.num_models} models of {args.arch} on {args.dataset}, each on "
          f"{manifest['subset_size']} of {len(data.train_ids)} training examples (ratio {args.subset_ratio:g}), "
          f"{args.epochs} epochs, lr {args.lr:g}, batch {args.batch_size}, no augmentation, on {device}; "
          f"{where}{len(mine)} models, {len(mine) - len(todo)} already done -> {prog_path if sharded else final}")
    if args.dataset == "digits" and args.arch not in SMALL_ARCHS:
        print(f"hint: --arch {args.arch} on the 8x8 digits is slow; --arch mlp (or cnn_s) trains "
              f"128 models in about a minute on a CPU")
    dev_data = data.to(device)
    recipe = Recipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, momentum=args.momentum,
                    weight_decay=args.weight_decay, warmup=args.warmup, augment=False)

    def build(k: int):
        torch.manual_seed(int(prog.seeds[k]))
        return prepare_model(build_model(args.arch, data.num_classes, in_channels=data.in_channels,
                                         image_size=data.image_size, mean=data.mean, std=data.std,
                                         imagenet_arch=args.imagenet_arch), device)

    t0 = time.perf_counter()
    modes: set[str] = set()
    if todo:
        example = dev_data.x[:1].to(device).float().div_(255)
        chunk = auto_chunk(build(todo[0]), example, args.batch_size)
        all_ids = np.arange(len(data.x), dtype=np.int64)
        test_ids = np.arange(len(data.test_y), dtype=np.int64)
        finished = len(mine) - len(todo)
        for start in range(0, len(todo), chunk):
            ks = todo[start:start + chunk]
            models = [build(k) for k in ks]
            subsets = [np.flatnonzero(prog.masks[k]) for k in ks]
            mode = train_models(models, dev_data, subsets, prog.seeds[ks], recipe, device=device,
                                desc=f"models {ks[0]}..{ks[-1]}")
            modes.add(mode)
            batched = mode == "batched"
            corr = correctness(models, dev_data.x, dev_data.y, all_ids, device=device, batched=batched)
            test_corr = correctness(models, dev_data.test_x, dev_data.test_y, test_ids, device=device, batched=batched)
            for j, k in enumerate(ks):
                prog.record(k, corr[j], float(test_corr[j].mean()))
            save_progress(prog_path, prog)
            finished += len(ks)
            el = time.perf_counter() - t0
            left = el / (start + len(ks)) * (len(todo) - start - len(ks))
            print(f"{where}models {finished}/{len(mine)} done, {el:.1f}s elapsed, ~{left:.0f}s left "
                  f"(chunk of {len(ks)} {mode}; mean test acc {100 * float(test_corr.mean()):.2f}%)", flush=True)
    seconds = time.perf_counter() - t0
    if sharded:
        print(f"shard {shard} of {n_shards} complete -> {prog_path}; when all {n_shards} shards are complete run: "
              f"python main_memorization.py --merge --num_shards {n_shards} --dataset {args.dataset} "
              f"--ckpts {args.ckpts}")
        return 0
    arrays = write_scores(final, prog)
    prog_path.unlink(missing_ok=True)
    print(f"memorization scores -> {final} ({seconds:.1f}s for {len(todo)} models)")
    summarize(args, out_dir, arrays, extra={"seconds": seconds, "models_trained_now": len(todo),
                                            "training": sorted(modes)})
    return 0


def run_merge(args: argparse.Namespace, out_dir: Path) -> int:
    n = args.num_shards
    final = score_path(out_dir, args.dataset)
    if final.is_file() and not args.overwrite:
        raise UserError(f"{final} already holds memorization scores; pass --overwrite to replace them")
    paths = [shard_path(out_dir, args.dataset, i, n) for i in range(n)]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        raise UserError(f"--merge: no shard file for shard{'s' if len(missing) > 1 else ''} {describe_ids(missing)} "
                        f"of {n} (looked for {paths[missing[0]]}); run python main_memorization.py --shard i "
                        f"--num_shards {n} with the same arguments for each")
    merged = merge_progress([(p, load_progress(p)) for p in paths])
    m = merged.manifest
    if m.get("dataset") != args.dataset:
        raise UserError(f"--merge: the shards are for --dataset {m.get('dataset')}, not {args.dataset}")
    # The summary looks for proxies of the run the shards' own arguments point to.
    for k in ("arch", "epochs", "lr", "batch_size", "seed", "split_seed"):
        setattr(args, k, m[k])
    arrays = write_scores(final, merged)
    print(f"merged {n} shards ({merged.num_models} models) -> {final}")
    summarize(args, out_dir, arrays, extra={"merged_shards": n})
    return 0


# --------------------------------------------------------------------------------------------
# Summary: group means and Spearman correlations with the proxies
# --------------------------------------------------------------------------------------------

def proxy_sources(args: argparse.Namespace, out_dir: Path) -> list[Path]:
    """The proxy files to compare with: the pretrained run's and this directory's."""
    out: list[Path] = []
    if args.proxy_file is not None:
        out.append(Path(args.proxy_file))
    elif args.mask is not None:
        p = Path(args.mask)
        out.append((p if p.is_dir() else p.parent) / "proxies.npz")
    else:
        out.append(default_pretrained(args) / "proxies.npz")
    out.append(out_dir / f"{args.dataset}_{args.arch}_proxies.npz")
    return out


def proxy_correlations(args: argparse.Namespace, out_dir: Path, ids: np.ndarray, scores: np.ndarray) -> dict:
    """Spearman of every proxy found with ``scores`` (aligned to ``ids``)."""
    from memorization.scores import load_proxy

    found: dict[str, dict] = {}
    for path in proxy_sources(args, out_dir):
        if not path.is_file():
            print(f"note: no proxy file at {path}")
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                names = [k for k in z.files if k in PROXY_SIGN]
        except Exception as e:  # a damaged file must not lose the scores just written
            print(f"note: cannot read {path}: {type(e).__name__}")
            continue
        for name in names:
            try:
                vals = load_proxy(path, name, ids)
            except UserError as e:
                print(f"note: {e}")
                continue
            rho, count = spearman(vals, scores)
            found[name] = {"spearman": rho, "count": count, "file": str(path),
                           "expected_sign": "negative" if PROXY_SIGN[name] else "positive"}
    return found


def summarize(args: argparse.Namespace, out_dir: Path, arrays: dict, extra: dict | None = None) -> dict:
    train_ids = arrays["train_ids"]
    mem, valid = arrays["memorization"], arrays["valid"]
    ids = train_ids[valid[train_ids]]
    lost = len(train_ids) - len(ids)
    if lost:
        print(f"note: {lost} training examples have no estimate (in every subset or in none; "
              f"e.g. ids {describe_ids(np.setdiff1d(train_ids, ids), 5)}); they score 0.0 with valid=False")
    s = mem[ids]
    n = args.num_indexes_to_replace or max(1, len(train_ids) // 10)
    if n > len(ids):
        print(f"note: --num_indexes_to_replace {n} is more than the {len(ids)} scored examples; groups use {len(ids)}")
        n = len(ids)
    groups = group_means(ids, s, n)
    print(f"memorization over {len(ids)} training examples: mean {s.mean():.4f}, "
          f"high group (n={n}) mean {groups['high']:.4f}, mid {groups['mid']:.4f}, low {groups['low']:.4f}; "
          f"{int((s > 0.5).sum())} examples above 0.5; mean test acc of the models "
          f"{100 * float(np.nanmean(arrays['test_acc'])):.2f}%")
    corr = proxy_correlations(args, out_dir, ids, s)
    for name, c in corr.items():
        print(f"Spearman(memorization, {name}) = {c['spearman']:+.3f} over {c['count']} examples "
              f"(expected {c['expected_sign']}; {c['file']})")
    summary = {"num_models": int(arrays["seeds"].shape[0]), "num_scored": int(len(ids)),
               "num_train": int(len(train_ids)), "mean": float(s.mean()), "group_size": int(n),
               "group_means": groups, "test_acc_mean": float(np.nanmean(arrays["test_acc"])),
               "spearman": corr, **(extra or {})}
    atomic_write_json(summary_path(out_dir, args.dataset), summary)
    return summary


# --------------------------------------------------------------------------------------------
# Proxies
# --------------------------------------------------------------------------------------------

def run_proxies(args: argparse.Namespace, out_dir: Path) -> int:
    path = out_dir / f"{args.dataset}_{args.arch}_proxies.npz"
    existing: dict[str, np.ndarray] = {}
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                existing = {k: np.asarray(z[k]) for k in z.files}
        except Exception as e:
            if not args.overwrite:
                raise UserError(f"{path} is not readable ({type(e).__name__}); pass --overwrite to replace it") from None
        again = [p for p in args.proxies if p in existing]
        if again and not args.overwrite:
            raise UserError(f"{path} already holds {', '.join(again)}; pass --overwrite to recompute")
    model_file = resolve_model_file(args.mask, args) if "ho_ret" in args.proxies else None
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    if "ids" in existing and not np.array_equal(existing["ids"], data.train_ids):
        if not args.overwrite:
            raise UserError(f"{path} holds proxies of other training ids (another --split_seed?); "
                            f"pass --overwrite to replace it")
        existing = {}
    device = device_from_args(args)
    cpu_threads(device)
    dev_data = data.to(device)
    seed = args.train_seed if args.train_seed is not None else args.seed

    def build():
        return build_model(args.arch, data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                           mean=data.mean, std=data.std, imagenet_arch=args.imagenet_arch)

    results: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    if "ho_ret" in args.proxies:
        model = build()
        load_into(model, model_file, arch=args.arch, num_classes=data.num_classes)
        model = prepare_model(model, device)
        print(f"ho_ret: fine-tuning {model_file} on the test set ({len(data.test_y)} examples) for up to "
              f"{args.ft_epochs} epochs at lr {args.ft_lr:g}")
        results["ho_ret"], rep = holdout_retraining(
            model, dev_data, data.train_ids, epochs=args.ft_epochs, lr=args.ft_lr, momentum=args.momentum,
            weight_decay=args.weight_decay, batch_size=args.batch_size, seed=seed, device=device)
        info["ho_ret"] = {"model": str(model_file), "ft_epochs": args.ft_epochs, "ft_lr": args.ft_lr,
                          "holdout": "test", **rep}
    if "curvature" in args.proxies:
        torch.manual_seed(seed)
        model = prepare_model(build(), device)
        recipe = Recipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, momentum=args.momentum,
                        weight_decay=args.weight_decay, warmup=args.warmup, augment=not args.no_aug,
                        sam=sam_config(args))
        print(f"curvature: training {args.arch} from scratch ({args.epochs} epochs, lr {args.lr:g}, "
              f"batch {args.batch_size}{', no augmentation' if args.no_aug else ''}), h = {args.h:g}")
        t0 = time.perf_counter()
        results["curvature"], per_epoch = loss_curvature(model, dev_data, data.train_ids, recipe, h=args.h,
                                                         seed=seed, device=device)
        results["curvature_epochs"] = per_epoch
        info["curvature"] = {"h": args.h, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                             "augment": not args.no_aug, "seed": seed, "seconds": time.perf_counter() - t0}
    import json

    meta = {}
    if "proxy_manifest" in existing:
        try:
            meta = json.loads(str(existing["proxy_manifest"][()]))
        except ValueError:
            meta = {}
    meta.update(info)
    arrays = {k: v for k, v in existing.items() if k != "proxy_manifest"}
    arrays.update(ids=data.train_ids, **results, proxy_manifest=np.array(json.dumps(meta, sort_keys=True)))
    atomic_save_npz(path, **arrays)
    print(f"proxies {', '.join(args.proxies)} -> {path}")
    # Spearman with the memorization scores, when there are any.
    try:
        sfile = find_score_file(args.dataset, mem_file=args.mem_file, search_dirs=[out_dir, "."])
        scores = load_scores(sfile, score_key(args.dataset, sfile), len(data.x))
    except UserError as e:
        print(f"note: no Spearman correlation with memorization scores ({e})")
        return 0
    valid = np.ones(len(data.x), bool)
    try:
        with np.load(sfile, allow_pickle=False) as z:
            if "valid" in z.files:
                valid = np.asarray(z["valid"], bool)
    except Exception:
        pass
    keep = valid[data.train_ids]
    for name in args.proxies:
        rho, count = spearman(results[name][keep], scores[data.train_ids][keep])
        print(f"Spearman(memorization, {name}) = {rho:+.3f} over {count} examples ({sfile})")
    return 0


if __name__ == "__main__":
    run_main(main)
