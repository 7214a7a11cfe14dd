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
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from evaluation.entanglement import entanglement_score, entanglement_score_normalized
from forget_sets.file import ForgetSet, sha256_file
from forget_sets.kinds import plan_forget_set
from forget_sets.store import check_can_save, forget_ids_sha256, load_or_build
from stages import configs
from stages.common import FORGET_GROUPS, finish_run, finished_run, main_of, run_timed, start_model, unlearn_metrics
from trainer.device import prepare_model, resolve_device
from trainer.distributed import finish, init_distributed, unwrap, wrap_model
from trainer.evaluate import embed
from trainer.fit import CHECKPOINT
from unlearn.base import UnlearnTask
from unlearn.config import hparams_record, method_tag
from unlearn.saliency import load_mask, mask_fraction, provenance_mismatches, read_mask_file
from utils import paths
from utils.data import ImageData, load_data
from utils.errors import UserError
from utils.rundir import check_writable, commit_run_dir, prepare_run_dir, run_config, write_config


def main(prog: str, argv: Sequence[str] | None = None, allowed: tuple[str, ...] | None = None) -> int:
    """Entry point of main_forget.py / main_random.py."""
    return main_of(run, prog, argv, allowed=allowed)


def run(args: argparse.Namespace, prog: str = "main_forget.py", allowed: tuple[str, ...] | None = None) -> int:
    """The whole stage (see the module docstring); returns the exit status."""
    configs.check_method(args, allowed)
    retrain = args.unlearn == "retrain"
    info = init_distributed(resolve_device(args.device).type)
    if info.enabled and not retrain:
        raise UserError(f"--unlearn {args.unlearn}: only retrain runs data-parallel under torchrun; "
                        f"run the other methods in one process")
    device = configs.device(args, info.local_rank if info.enabled else None)
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    # retrain needs no start model; with --mask it only checks that the model fits (it names the
    # model the retrain is a reference for)
    model_file = None if retrain and args.mask is None and not args.es else configs.resolve_start_model(args)
    model = start_model(args, data, model_file)
    mask = load_mask(args.path, model) if args.path else None
    spec = configs.forget_spec(args, start_model=model_file)
    plan = plan_forget_set(spec, data)
    check_can_save(plan)
    model_name = paths.model_name_of(model_file) if model_file is not None else configs.default_pretrained(args).name
    tag = None if args.es else method_tag(args.unlearn, configs.unlearn_config(args), args.path)
    run_dir = None if args.es else paths.unlearn_run_dir(args.ckpts, plan.name, model_name, tag, args.seed)
    if run_dir is not None and finished_run(run_dir, args, prog, FORGET_GROUPS):
        return 0
    if run_dir is not None:
        _check_run_dir(args, run_dir, retrain)

    fs = load_or_build(plan, spec, data, device=device)
    if args.path and model_file is not None:
        _warn_mask_provenance(args.path, model_file, fs)
    model = prepare_model(model, device)
    if args.es:
        _print_entanglement(args, model, data, fs, device)
        return 0
    if retrain:
        torch.manual_seed(configs.train_seed(args))
        model = prepare_model(start_model(args, data, None), device)
        print(f"retrain: {args.unlearn_epochs} epochs at lr {args.unlearn_lr:g} (--unlearn_epochs/--unlearn_lr; "
              f"pretraining flags: --epochs {args.epochs} --lr {args.lr:g}), batch {args.batch_size}, "
              f"SGD + cosine" + (" + SAM" if args.sam else ""))
    if mask is not None:
        params = dict(model.named_parameters())
        mask = {n: m.to(params[n].device) for n, m in mask.items()}
    cfg = configs.unlearn_config(args, mask)
    fs_file = Path(plan.path)
    fs_sha = sha256_file(fs_file)
    if info.is_main:
        final, run_dir = run_dir, prepare_run_dir(run_dir, overwrite=args.overwrite, resume=args.resume and retrain)
        if not (args.resume and retrain and (run_dir / "config.json").is_file()):  # a resumed run keeps its own
            write_config(run_dir, run_config(
                vars(args), stage="unlearn", prog=prog, method=args.unlearn, method_tag=tag, forget_set=plan.name,
                forget_set_file=str(fs_file), forget_set_sha256=fs_sha, pretrained=None if retrain else str(model_file),
                model_name=model_name, device=str(device), world_size=info.world))
    if retrain:
        cfg.run_dir, cfg.resume, cfg.dist_info = run_dir, bool(args.resume), info
    if info.enabled:
        torch.distributed.barrier()
        model = wrap_model(model, info, device)
    if info.is_main:
        print(f"{args.unlearn} on {plan.name} ({len(fs.forget_ids)} forget, {len(fs.retain_ids)} retain) "
              f"from {'a fresh initialization' if retrain else model_file} on {device}"
              + (f" x{info.world} ranks" if info.enabled else "") + f" -> {run_dir}")

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
    finish_run(args, model, task.data, fs, run_dir, device,
               lambda ev: unlearn_metrics(args, method=args.unlearn, tag=tag, data=data, forget_set=plan.name,
                                          forget_kind=plan.kind, fs=fs, fs_file=fs_file, fs_sha=fs_sha, ev=ev,
                                          seconds=seconds, pretrained=None if retrain else model_file,
                                          model_name=model_name, hparams=hparams, device=device),
               commit=lambda: commit_run_dir(run_dir, final))
    finish(info)  # data-parallel: wait for the other ranks and exit (no-op in one process)
    return 0


def _check_run_dir(args: argparse.Namespace, run_dir: Path, retrain: bool) -> None:
    """Refuse a run directory that holds an unfinished retrain (without --resume) or cannot be
    written."""
    if (run_dir / CHECKPOINT).is_file() and not (args.overwrite or (args.resume and retrain)):
        raise UserError(f"{run_dir} holds an unfinished retrain; pass --resume to continue it or --overwrite "
                        f"to restart")
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
