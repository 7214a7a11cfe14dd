"""main_memorization.py: memorization scores (the subsampled estimator) and memorization proxies
-> ``<ckpts>/memorization/`` (docs/stage_memorization.md).

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

Proxies (memorization/computed_proxies.py): ``--proxies ho_ret,curvature`` computes holdout
retraining from the pretrained model (``--mask`` or the default run; ``--ft_epochs``, ``--ft_lr``)
and loss curvature from a fresh training run with the pretraining recipe (``--h``) into
``<dataset>_<arch>_proxies.npz`` (``ids`` + one array per proxy, existing proxies kept).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from evaluation.metrics import spearman
from forget_sets.select import group_means
from memorization.computed_proxies import holdout_retraining, loss_curvature
from memorization.estimator import (Progress, describe_ids, load_progress, merge_progress, new_progress,
                                    recipe_mismatch, save_progress, score_path, shard_models, shard_path,
                                    subset_size, summary_path, write_scores)
from memorization.proxies import COMPUTED_PROXIES, LEARNING_EVENT_PROXIES, PROXY_SIGN
from memorization.scores import find_score_file, load_proxy, load_scores, score_key
from models import build_for
from stages.common import start_model
from stages.configs import default_pretrained, device, pretrain_recipe, resolve_start_model, train_seed
from trainer.device import prepare_model
from trainer.ensemble import auto_chunk, correctness, train_models
from trainer.fit import Recipe
from utils import paths
from utils.data import ImageData, load_data
from utils.errors import UserError
from utils.io import atomic_save_npz, atomic_write_json
from utils.rundir import check_writable

SMALL_ARCHS = ("mlp", "cnn_s")


def cpu_threads(device: torch.device) -> None:
    """On a CPU busier than its cores (1-minute load average above the core count), train with one
    intra-op thread: threads of one process then spin-wait on each other and a step of these small
    models measured 3-5x slower with 2 threads than with 1 on the shared 2-core test machine."""
    if device.type != "cpu" or torch.get_num_threads() <= 1 or not hasattr(os, "getloadavg"):
        return
    load = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if load > (cores or 1):
        torch.set_num_threads(1)
        print(f"note: the CPU is busy (load {load:.1f} on {cores} cores): using 1 thread")


def check_proxy_flags(args: argparse.Namespace) -> None:
    """``--proxies`` and the flags of the proxies it names."""
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


def check_args(args: argparse.Namespace) -> None:
    """Everything about the flags that can be refused before any work."""
    if args.proxies is not None:
        check_proxy_flags(args)
    if args.merge and args.shard is not None:
        raise UserError(f"--merge combines all {args.num_shards} shards; do not pass --shard")
    if args.proxies is None and not args.merge and args.shard is None and args.num_shards > 1:
        raise UserError(f"--num_shards {args.num_shards} without --shard: pass --shard i (0..{args.num_shards - 1}) "
                        f"to train one shard, or --merge to combine them")
    if args.proxy_file is not None and not Path(args.proxy_file).is_file():
        raise UserError(f"--proxy_file {args.proxy_file}: no such file")


def run(args: argparse.Namespace) -> int:
    """``main_memorization.py``: the proxies (``--proxies``), the shard merge (``--merge``) or the
    estimator (all models, or one ``--shard``)."""
    check_args(args)
    out_dir = paths.memorization_dir(args.ckpts)
    check_writable(out_dir, "--ckpts")
    if args.proxies is not None:
        return run_proxies(args, out_dir)
    if args.merge:
        return run_merge(args, out_dir)
    return run_estimator(args, out_dir)


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------

def estimator_manifest(args: argparse.Namespace, data: ImageData) -> dict:
    return {
        "dataset": args.dataset, "arch": args.arch, "imagenet_arch": bool(args.imagenet_arch),
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "momentum": args.momentum,
        "weight_decay": args.weight_decay, "warmup": args.warmup, "augment": False,
        "subset_ratio": args.subset_ratio, "num_models": args.num_models, "seed": args.seed,
        "split_seed": args.split_seed, "num_examples": int(len(data.x)), "num_train": int(len(data.train_ids)),
        "subset_size": subset_size(len(data.train_ids), args.subset_ratio), "num_shards": args.num_shards,
        "estimator": "subsampled heldout (Feldman & Zhang 2020)",
    }


def estimator_recipe(args: argparse.Namespace) -> Recipe:
    """The pretraining recipe flags as given, never augmented, never SAM."""
    return replace(pretrain_recipe(args), augment=False, sam=None)


@dataclass
class EstimatorJob:
    """One estimator process: all models, or the models of one shard."""

    args: argparse.Namespace
    data: ImageData
    device: torch.device
    shard: int
    num_shards: int
    sharded: bool
    final: Path  # the score file
    prog_path: Path  # this shard's progress file
    prog: Progress

    @property
    def where(self) -> str:
        return f"shard {self.shard} of {self.num_shards}: " if self.sharded else ""

    def build(self, k: int) -> torch.nn.Module:
        """Model k, initialized from its own seed, on the device."""
        torch.manual_seed(int(self.prog.seeds[k]))
        return prepare_model(build_for(self.args.arch, self.data, imagenet_arch=self.args.imagenet_arch), self.device)


def open_progress(args: argparse.Namespace, out_dir: Path) -> EstimatorJob | None:
    """Load the data and this shard's progress (resumed when its settings match the flags, else a
    one-line error), or start an empty one; None when the score file already holds these scores
    (scores of other settings are refused without ``--overwrite``)."""
    sharded = args.shard is not None
    shard, n_shards = (args.shard, args.num_shards) if sharded else (0, 1)
    final = score_path(out_dir, args.dataset)
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    manifest = estimator_manifest(args, data)
    if not sharded and final.is_file() and not args.overwrite:
        diff = recipe_mismatch(load_progress(final).manifest, manifest)
        if diff:
            raise UserError(f"{final} holds memorization scores of other settings ({'; '.join(diff[:3])}, found vs "
                            f"asked); pass --overwrite to recompute them")
        print(f"main_memorization.py: {final} already holds these memorization scores; nothing to do "
              f"(--overwrite recomputes them)")
        return None
    dev = device(args)
    cpu_threads(dev)
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
    return EstimatorJob(args, data, dev, shard, n_shards, sharded, final, prog_path, prog)


def announce(job: EstimatorJob, mine: np.ndarray, todo: list[int]) -> None:
    args, data = job.args, job.data
    size = subset_size(len(data.train_ids), args.subset_ratio)
    print(f"memorization: {args.num_models} models of {args.arch} on {args.dataset}, each on "
          f"{size} of {len(data.train_ids)} training examples (ratio {args.subset_ratio:g}), "
          f"{args.epochs} epochs, lr {args.lr:g}, batch {args.batch_size}, no augmentation, on {job.device}; "
          f"{job.where}{len(mine)} models, {len(mine) - len(todo)} already done "
          f"-> {job.prog_path if job.sharded else job.final}")
    if args.dataset == "digits" and args.arch not in SMALL_ARCHS:
        print(f"hint: --arch {args.arch} on the 8x8 digits is slow; --arch mlp (or cnn_s) trains "
              f"128 models in about a minute on a CPU")


def train_chunks(job: EstimatorJob, dev_data: ImageData, todo: list[int], num_mine: int) -> set[str]:
    """Train the models ``todo`` in chunks that fit (batched ensembles where faster), record their
    correctness on every id and their test accuracy, and save the progress after every chunk.
    Returns the training modes used."""
    t0 = time.perf_counter()
    args, prog, device = job.args, job.prog, job.device
    recipe = estimator_recipe(args)
    modes: set[str] = set()
    example = dev_data.x[:1].to(device).float().div_(255)
    chunk = auto_chunk(job.build(todo[0]), example, args.batch_size)
    all_ids = np.arange(len(job.data.x), dtype=np.int64)
    test_ids = np.arange(len(job.data.test_y), dtype=np.int64)
    finished = num_mine - len(todo)
    for start in range(0, len(todo), chunk):
        ks = todo[start:start + chunk]
        models = [job.build(k) for k in ks]
        subsets = [np.flatnonzero(prog.masks[k]) for k in ks]
        mode = train_models(models, dev_data, subsets, prog.seeds[ks], recipe, device=device,
                            desc=f"models {ks[0]}..{ks[-1]}")
        modes.add(mode)
        batched = mode == "batched"
        corr = correctness(models, dev_data.x, dev_data.y, all_ids, device=device, batched=batched)
        test_corr = correctness(models, dev_data.test_x, dev_data.test_y, test_ids, device=device, batched=batched)
        for j, k in enumerate(ks):
            prog.record(k, corr[j], float(test_corr[j].mean()))
        save_progress(job.prog_path, prog)
        finished += len(ks)
        el = time.perf_counter() - t0
        left = el / (start + len(ks)) * (len(todo) - start - len(ks))
        print(f"{job.where}models {finished}/{num_mine} done, {el:.1f}s elapsed, ~{left:.0f}s left "
              f"(chunk of {len(ks)} {mode}; mean test acc {100 * float(test_corr.mean()):.2f}%)", flush=True)
    return modes


def finish_estimator(job: EstimatorJob, out_dir: Path, *, seconds: float, trained: int, modes: set[str]) -> int:
    """A shard says how to merge; the whole estimator writes the score file and the summary."""
    args = job.args
    if job.sharded:
        n = job.num_shards
        print(f"shard {job.shard} of {n} complete -> {job.prog_path}; when all {n} shards are complete run: "
              f"python main_memorization.py --merge --num_shards {n} --dataset {args.dataset} "
              f"--ckpts {args.ckpts}")
        return 0
    arrays = write_scores(job.final, job.prog)
    job.prog_path.unlink(missing_ok=True)
    print(f"memorization scores -> {job.final} ({seconds:.1f}s for {trained} models)")
    summarize(args, out_dir, arrays, extra={"seconds": seconds, "models_trained_now": trained,
                                            "training": sorted(modes)})
    return 0


def run_estimator(args: argparse.Namespace, out_dir: Path) -> int:
    """Train this process's models not yet done, then finish (score file, or shard complete)."""
    job = open_progress(args, out_dir)
    if job is None:
        return 0
    mine = shard_models(args.num_models, job.shard, job.num_shards)
    todo = [int(k) for k in mine if not job.prog.done[k]]
    announce(job, mine, todo)
    dev_data = job.data.to(job.device)
    t0 = time.perf_counter()
    modes = train_chunks(job, dev_data, todo, len(mine)) if todo else set()
    return finish_estimator(job, out_dir, seconds=time.perf_counter() - t0, trained=len(todo), modes=modes)


def run_merge(args: argparse.Namespace, out_dir: Path) -> int:
    """Combine the ``--num_shards`` progress files into the score file and its summary."""
    n = args.num_shards
    final = score_path(out_dir, args.dataset)
    if final.is_file() and not args.overwrite:
        raise UserError(f"{final} already holds memorization scores; pass --overwrite to replace them")
    shard_files = [shard_path(out_dir, args.dataset, i, n) for i in range(n)]
    missing = [i for i, p in enumerate(shard_files) if not p.is_file()]
    if missing:
        raise UserError(f"--merge: no shard file for shard{'s' if len(missing) > 1 else ''} {describe_ids(missing)} "
                        f"of {n} (looked for {shard_files[missing[0]]}); run python main_memorization.py --shard i "
                        f"--num_shards {n} with the same arguments for each")
    merged = merge_progress([(p, load_progress(p)) for p in shard_files])
    m = merged.manifest
    if m.get("dataset") != args.dataset:
        raise UserError(f"--merge: the shards are for --dataset {m.get('dataset')}, not {args.dataset}")
    # The summary looks for proxies of the run the shards' own arguments point to.
    shards_args = argparse.Namespace(**{**vars(args), **{k: m[k] for k in ("arch", "epochs", "lr", "batch_size",
                                                                           "seed", "split_seed")}})
    arrays = write_scores(final, merged)
    print(f"merged {n} shards ({merged.num_models} models) -> {final}")
    summarize(shards_args, out_dir, arrays, extra={"merged_shards": n})
    return 0


# --------------------------------------------------------------------------------------------
# Summary: group means (forget_sets.select.group_means) and Spearman correlations with the proxies
# --------------------------------------------------------------------------------------------

def proxy_sources(args: argparse.Namespace) -> list[Path]:
    """The proxy files to compare with: the pretrained run's and the memorization directory's."""
    out: list[Path] = []
    if args.proxy_file is not None:
        out.append(Path(args.proxy_file))
    elif args.mask is not None:
        p = Path(args.mask)
        out.append(paths.learning_event_proxy_path(p / paths.MODEL_FILE if p.is_dir() else p))
    else:
        out.append(paths.learning_event_proxy_path(default_pretrained(args) / paths.MODEL_FILE))
    out.append(paths.computed_proxy_path(args.ckpts, args.dataset, args.arch))
    return out


def proxy_correlations(args: argparse.Namespace, ids: np.ndarray, scores: np.ndarray) -> dict:
    """Spearman of every proxy found with ``scores`` (aligned to ``ids``)."""
    found: dict[str, dict] = {}
    for path in proxy_sources(args):
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
    """Print and write ``<dataset>_memorization_summary.json``: group means and proxy correlations."""
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
    corr = proxy_correlations(args, ids, s)
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

def read_proxy_file(path: Path, proxies: list[str], *, overwrite: bool) -> dict[str, np.ndarray]:
    """The arrays of an existing proxy file (empty when there is none, or an unreadable one is
    to be overwritten); recomputing a proxy it holds needs ``--overwrite``."""
    existing: dict[str, np.ndarray] = {}
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                existing = {k: np.asarray(z[k]) for k in z.files}
        except Exception as e:
            if not overwrite:
                raise UserError(f"{path} is not readable ({type(e).__name__}); "
                                f"pass --overwrite to replace it") from None
        again = [p for p in proxies if p in existing]
        if again and not overwrite:
            raise UserError(f"{path} already holds {', '.join(again)}; pass --overwrite to recompute")
    return existing


def compute_ho_ret(args: argparse.Namespace, data: ImageData, dev_data: ImageData, device: torch.device,
                   model_file: Path, seed: int) -> tuple[np.ndarray, dict]:
    """Holdout retraining of the pretrained model ``model_file``: values and their manifest entry."""
    model = prepare_model(start_model(args, data, model_file), device)
    print(f"ho_ret: fine-tuning {model_file} on the test set ({len(data.test_y)} examples) for up to "
          f"{args.ft_epochs} epochs at lr {args.ft_lr:g}")
    values, rep = holdout_retraining(
        model, dev_data, data.train_ids, epochs=args.ft_epochs, lr=args.ft_lr, momentum=args.momentum,
        weight_decay=args.weight_decay, batch_size=args.batch_size, seed=seed, device=device)
    return values, {"model": str(model_file), "ft_epochs": args.ft_epochs, "ft_lr": args.ft_lr,
                    "holdout": "test", **rep}


def compute_curvature(args: argparse.Namespace, data: ImageData, dev_data: ImageData, device: torch.device,
                      seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Loss curvature along a fresh training run with the pretraining recipe: the mean over epochs,
    the per-epoch values and the manifest entry."""
    torch.manual_seed(seed)
    model = prepare_model(build_for(args.arch, data, imagenet_arch=args.imagenet_arch), device)
    print(f"curvature: training {args.arch} from scratch ({args.epochs} epochs, lr {args.lr:g}, "
          f"batch {args.batch_size}{', no augmentation' if args.no_aug else ''}), h = {args.h:g}")
    t0 = time.perf_counter()
    mean, per_epoch = loss_curvature(model, dev_data, data.train_ids, pretrain_recipe(args), h=args.h,
                                     seed=seed, device=device)
    return mean, per_epoch, {"h": args.h, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                             "augment": not args.no_aug, "seed": seed, "seconds": time.perf_counter() - t0}


def write_proxy_file(path: Path, existing: dict[str, np.ndarray], train_ids: np.ndarray,
                     results: dict[str, np.ndarray], info: dict[str, dict]) -> None:
    """The existing arrays with ``results`` added (replaced), and ``info`` merged into the JSON
    ``proxy_manifest``."""
    meta = {}
    if "proxy_manifest" in existing:
        try:
            meta = json.loads(str(existing["proxy_manifest"][()]))
        except ValueError:
            meta = {}
    meta.update(info)
    arrays = {k: v for k, v in existing.items() if k != "proxy_manifest"}
    arrays.update(ids=train_ids, **results, proxy_manifest=np.array(json.dumps(meta, sort_keys=True)))
    atomic_save_npz(path, **arrays)


def report_spearman(args: argparse.Namespace, out_dir: Path, data: ImageData, results: dict[str, np.ndarray]) -> None:
    """Spearman of each new proxy with the memorization scores, when there are any."""
    try:
        sfile = find_score_file(args.dataset, mem_file=args.mem_file, search_dirs=[out_dir, "."])
        scores = load_scores(sfile, score_key(args.dataset, sfile), len(data.x))
    except UserError as e:
        print(f"note: no Spearman correlation with memorization scores ({e})")
        return
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


def run_proxies(args: argparse.Namespace, out_dir: Path) -> int:
    """``--proxies``: compute them into ``<dataset>_<arch>_proxies.npz``, keeping the others there."""
    path = paths.computed_proxy_path(args.ckpts, args.dataset, args.arch)
    existing = read_proxy_file(path, args.proxies, overwrite=args.overwrite)
    model_file = resolve_start_model(args) if "ho_ret" in args.proxies else None
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    if "ids" in existing and not np.array_equal(existing["ids"], data.train_ids):
        if not args.overwrite:
            raise UserError(f"{path} holds proxies of other training ids (another --split_seed?); "
                            f"pass --overwrite to replace it")
        existing = {}
    dev = device(args)
    cpu_threads(dev)
    dev_data = data.to(dev)
    seed = train_seed(args)
    results: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    if "ho_ret" in args.proxies:
        results["ho_ret"], info["ho_ret"] = compute_ho_ret(args, data, dev_data, dev, model_file, seed)
    if "curvature" in args.proxies:
        results["curvature"], results["curvature_epochs"], info["curvature"] = compute_curvature(
            args, data, dev_data, dev, seed)
    write_proxy_file(path, existing, data.train_ids, results, info)
    print(f"proxies {', '.join(args.proxies)} -> {path}")
    report_spearman(args, out_dir, data, results)
    return 0
