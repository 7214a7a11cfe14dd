"""main_forget.py and main_random.py: forget set, one unlearning method, evaluation, run directory.

1. **Validate**: nothing is written before all of this passes (every failure is one line, exit
   status 2): the method and its flags (:func:`stages.configs.check_method`); the start model
   (``--mask``, or the pretrained run the pretraining flags point to) fits ``--arch`` and the
   dataset; the saliency mask fits that model; the forget-set inputs exist; the run directory does
   not hold a finished run (unless ``--overwrite``).
2. **Forget set**: loaded from or built into ``<ckpts>/forget_sets/<name>.npz``. ``--es`` prints
   the entanglement score here and stops.
3. **Model**: retrain starts from a fresh initialization (``--train_seed``, default ``--seed``);
   every other method from the start model.
4. **Method** from the registry, timed alone. A NaN or infinite loss stops the run (exit 1).
5. **Evaluate** and write ``<ckpts>/unlearn/<forget set>/<model>/<method tag>/seed<seed>/``:
   config.json, model.pt (unless --no_save), outputs.npz, metrics.json (last: marks it complete).
   ``<model>`` is the start model's run name, so runs of different pretrained models never collide;
   retrain's is the model named by ``--mask``, else the default pretrained run's name.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from arg_parser import given_flags
from evaluation.entanglement import entanglement_score, entanglement_score_normalized
from forget_sets.file import ForgetSet, sha256_file
from forget_sets.kinds import ForgetPlan, ForgetSpec, plan_forget_set
from forget_sets.store import check_can_save, forget_ids_sha256, load_or_build
from stages import configs
from stages.common import (FORGET_GROUPS, finish_run, finished_run, main_of, refuse_other_unfinished, run_timed,
                           start_model, unlearn_metrics, wandb_run)
from trainer.device import prepare_model, resolve_device
from trainer.distributed import DistInfo, finish, init_distributed, unwrap, wrap_model
from trainer.evaluate import embed
from trainer.fit import CHECKPOINT
from unlearn.base import UnlearnTask
from unlearn.config import hparams_record, method_tag
from unlearn.saliency import load_mask, mask_fraction, provenance_mismatches, read_mask_file
from utils import paths
from utils.data import ImageData, augment_record, load_data
from utils.errors import UserError
from utils.lock import release, run_lock
from utils.rundir import check_writable, commit_run_dir, prepare_run_dir, run_config, write_config
from utils.runlog import EpochLog, read_rows


# The flags that make retrain's training recipe; those not given on the command line come from the
# start model's pretraining (its config.json), so a retrain for a SAM-pretrained model uses SAM.
RECIPE_FLAGS = {"unlearn_epochs": "epochs", "unlearn_lr": "lr", "batch_size": "batch_size", "momentum": "momentum",
                "weight_decay": "weight_decay", "warmup": "warmup", "no_aug": "no_aug", "sam": "sam"}
SAM_DETAIL = ("rho", "lamb", "adaptive")


def main(prog: str, argv: Sequence[str] | None = None, allowed: tuple[str, ...] | None = None) -> int:
    """Entry point of main_forget.py / main_random.py."""
    return main_of(run, prog, argv, allowed=allowed, given=given_flags(argv, tuple(RECIPE_FLAGS), prog))


@dataclass
class Prepared:
    """What :func:`run` has validated before anything is written."""

    data: ImageData
    model: torch.nn.Module
    model_file: Path | None
    model_name: str
    mask: dict | None
    spec: ForgetSpec
    plan: ForgetPlan
    tag: str
    run_dir: Path
    info: DistInfo
    device: torch.device


def run(args: argparse.Namespace, prog: str = "main_forget.py", allowed: tuple[str, ...] | None = None,
        given: set[str] | None = None) -> int:
    """The whole stage (see the module docstring); returns the exit status. ``given``: the recipe
    flags given on the command line (None: all of them, i.e. retrain ignores the start model's recipe)."""
    configs.check_method(args, allowed)
    retrain = args.unlearn == "retrain"
    info = init_distributed(resolve_device(args.device).type)
    if info.enabled and not retrain:
        raise UserError(f"--unlearn {args.unlearn}: only retrain runs data-parallel under torchrun; "
                        f"run the other methods in one process")
    device = configs.device(args, info.local_rank if info.enabled else None)
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    # retrain needs no start model; with --mask it only checks that the model fits (it names the
    # model the retrain is a reference for, and gives the recipe)
    model_file = None if retrain and args.mask is None and not args.es else configs.resolve_start_model(args)
    if retrain:
        args = inherit_recipe(args, model_file if model_file is not None else
                              configs.default_pretrained(args) / paths.MODEL_FILE, given)
    model = start_model(args, data, model_file)
    mask = load_mask(args.path, model) if args.path else None
    spec = configs.forget_spec(args, start_model=model_file)
    plan = plan_forget_set(spec, data)
    check_can_save(plan)
    model_name = paths.model_name_of(model_file) if model_file is not None else configs.default_pretrained(args).name
    if args.es:
        fs = load_or_build(plan, spec, data, device=device)
        _print_entanglement(args, prepare_model(model, device), data, fs, device)
        return 0
    tag = method_tag(args.unlearn, configs.unlearn_config(args), args.path, train_seed=configs.train_seed(args),
                     seed=args.seed)
    run_dir = paths.unlearn_run_dir(args.ckpts, plan.name, model_name, tag, args.seed)
    identity = run_identity(args, plan.name, model_name, tag, None if retrain else model_file)
    if finished_run(run_dir, args, prog, FORGET_GROUPS, identity):
        return 0
    _check_run_dir(args, run_dir, retrain)
    p = Prepared(data, model, model_file, model_name, mask, spec, plan, tag, run_dir, info, device)
    with run_lock(run_dir, enabled=info.is_main):
        if finished_run(run_dir, args, prog, FORGET_GROUPS, identity):
            return 0  # finished by another run while this one started
        return _unlearn(args, prog, p, identity)


def inherit_recipe(args: argparse.Namespace, model_file: Path, given: set[str] | None) -> argparse.Namespace:
    """For retrain: ``args`` with the recipe flags not ``given`` on the command line taken from the
    pretraining of ``model_file`` (its config.json; unchanged for a checkpoint of the original code
    or a missing model). One line says which values came from where."""
    started = configs.start_model_args(model_file) if Path(model_file).is_file() else None
    if given is None or started is None:
        return args
    out = argparse.Namespace(**vars(args))
    taken = []
    for flag, source in RECIPE_FLAGS.items():
        if flag not in given and source in started and started[source] != getattr(args, flag):
            setattr(out, flag, started[source])
            taken.append(f"--{flag} {started[source]}")
    if "sam" not in given and started.get("sam") is not None:
        for flag in SAM_DETAIL:
            if flag in started and started[flag] != getattr(args, flag):
                setattr(out, flag, started[flag])
                taken.append(f"--{flag} {started[flag]}")
    if taken:
        print(f"retrain: the recipe of the start model {paths.model_name_of(model_file)}: {' '.join(taken)} "
              f"(flags given on the command line take precedence)")
    return out


def run_identity(args: argparse.Namespace, forget_set: str, model_name: str, tag: str,
                 model_file: Path | None) -> dict:
    """Every setting that makes this unlearning run: its path (forget set, start model, tag, seed)
    and the sha256 of the start model and saliency mask it reads, so a run directory is never
    reused for a run of other inputs that happen to share a name."""
    return {"forget_set": forget_set, "model_name": model_name, "method_tag": tag, "seed": int(args.seed),
            "start_model_sha256": sha256_file(model_file) if model_file is not None else None,
            "mask_sha256": sha256_file(Path(args.path)) if args.path else None}


def _unlearn(args: argparse.Namespace, prog: str, p: Prepared, identity: dict) -> int:
    """Build the forget set, run the method and write the run directory (under the run's lock)."""
    retrain, info, device, data = args.unlearn == "retrain", p.info, p.device, p.data
    fs = load_or_build(p.plan, p.spec, data, device=device)
    if args.path and p.model_file is not None:
        _warn_mask_provenance(args.path, p.model_file, fs)
    model = prepare_model(p.model, device)
    if retrain:
        torch.manual_seed(configs.train_seed(args))
        model = prepare_model(start_model(args, data, None), device)
        print(f"retrain: {args.unlearn_epochs} epochs at lr {args.unlearn_lr:g}, batch {args.batch_size}, "
              f"SGD + cosine" + (f" + SAM {args.sam}" if args.sam else "") + f" ({p.tag})")
    mask = p.mask
    if mask is not None:
        params = dict(model.named_parameters())
        mask = {n: m.to(params[n].device) for n, m in mask.items()}
    cfg = configs.unlearn_config(args, mask)
    fs_file = Path(p.plan.path)
    fs_sha = sha256_file(fs_file)
    run_dir = p.run_dir
    if info.is_main:
        final, run_dir = run_dir, prepare_run_dir(run_dir, overwrite=args.overwrite, resume=args.resume and retrain)
        if not (args.resume and retrain and (run_dir / "config.json").is_file()):  # a resumed run keeps its own
            write_config(run_dir, run_config(
                vars(args), stage="unlearn", prog=prog, method=args.unlearn, method_tag=p.tag,
                forget_set=p.plan.name, forget_set_file=str(fs_file), forget_set_sha256=fs_sha,
                pretrained=None if retrain else str(p.model_file), model_name=p.model_name, device=str(device),
                world_size=info.world, identity=identity, precision=cfg.precision,
                augmentation=augment_record(data, cfg.augment)))
    if retrain:
        cfg.run_dir, cfg.resume, cfg.dist_info = run_dir, bool(args.resume), info
    wb = wandb_run(args, f"{p.tag}-seed{args.seed}") if info.is_main else None
    if info.is_main and not retrain:  # retrain's log.jsonl comes with its checkpoints (trainer/fit.py)
        cfg.on_epoch = EpochLog(run_dir / "log.jsonl", mirror=wb)
    if info.enabled:
        torch.distributed.barrier()
        model = wrap_model(model, info, device)
    if info.is_main:
        print(f"{args.unlearn} on {p.plan.name} ({len(fs.forget_ids)} forget, {len(fs.retain_ids)} retain) "
              f"from {'a fresh initialization' if retrain else p.model_file} on {device}"
              + (f" x{info.world} ranks" if info.enabled else "") + f" -> {final}")

    torch.manual_seed(args.seed)
    task = UnlearnTask(model=model, data=data.to(device), forget_ids=np.asarray(fs.forget_ids, np.int64),
                       retain_ids=np.asarray(fs.retain_ids, np.int64), device=device, seed=args.seed,
                       generator=torch.Generator().manual_seed(args.seed))
    seconds = run_timed(args.unlearn, task, cfg, device)
    model = unwrap(task.model)
    if not info.is_main:  # only rank 0 evaluates and writes
        finish(info)
    hparams = hparams_record(args.unlearn, cfg, mask_file=args.path,
                             mask_fraction=mask_fraction(mask) if mask is not None else None,
                             train_seed=configs.train_seed(args))
    pretrained = None if retrain else p.model_file
    finish_run(args, model, task.data, fs, run_dir, device,
               lambda ev: unlearn_metrics(args, method=args.unlearn, tag=p.tag, data=data, forget_set=p.plan.name,
                                          forget_kind=p.plan.kind, fs=fs, fs_file=fs_file, fs_sha=fs_sha, ev=ev,
                                          seconds=seconds, pretrained=pretrained, model_name=p.model_name,
                                          hparams=hparams, device=device,
                                          start_recipe=configs.start_recipe(p.model_file or
                                                                            configs.default_pretrained(args) / paths.MODEL_FILE)),
               commit=lambda: commit_run_dir(run_dir, final))
    if wb is not None:
        for row in read_rows(final / "log.jsonl") if retrain else ():
            wb.log(row)
        wb.finish(json.loads((final / "metrics.json").read_text()))
    release(final)  # before finish: under torchrun it ends the process with os._exit
    finish(info)  # data-parallel: wait for the other ranks and exit (no-op in one process)
    return 0


def _check_run_dir(args: argparse.Namespace, run_dir: Path, retrain: bool) -> None:
    """Refuse a run directory that holds an unfinished retrain (without --resume) or cannot be
    written."""
    if (run_dir / CHECKPOINT).is_file() and not (args.overwrite or (args.resume and retrain)):
        raise UserError(f"{run_dir} holds an unfinished retrain; pass --resume to continue it or --overwrite "
                        f"to restart")
    if args.resume and retrain and not (run_dir / CHECKPOINT).is_file():
        refuse_other_unfinished(run_dir, list(run_dir.parent.parent.glob(f"retrain*/{run_dir.name}")), "retrain")
    check_writable(run_dir, "--ckpts")


def _warn_mask_provenance(mask_file: str, model_file: Path, fs: ForgetSet) -> None:
    """A warning when the saliency mask was made on another model or for another forget set."""
    _, manifest = read_mask_file(mask_file)
    for what in provenance_mismatches(manifest, model_sha256=sha256_file(model_file),
                                      forget_ids_sha256=forget_ids_sha256(fs)):
        print(f"warning: --path {mask_file}: the mask was {what}")


def _print_entanglement(args: argparse.Namespace, model: torch.nn.Module, data: ImageData, fs: ForgetSet,
                        device: torch.device) -> None:
    emb_r = embed(model, data, fs.retain_ids, device=device)
    emb_f = embed(model, data, fs.forget_ids, device=device)
    print(f"entanglement score (ES, RUM) of {len(fs.forget_ids)} forget vs {len(fs.retain_ids)} retain: "
          f"{entanglement_score(emb_r, emb_f):.6g}")
    if args.es_normalized:
        print(f"normalized entanglement score (sharp-unlearn): {entanglement_score_normalized(emb_r, emb_f):.6g}")


__all__ = ["main", "run"]
