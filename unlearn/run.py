"""The unlearning pipeline shared by main_forget.py and main_random.py.

``run_unlearning(args, prog)``:

1. **Validate** (nothing is written before all of this passes; every failure is a one-line
   :class:`UserError`, exit status 2): the method is known and its module present; ``--separate``
   only with NG and with ``--path``; ``--path`` not with retrain; the start model (``--mask``, or
   the pretrained run the pretraining flags point to) is readable and fits ``--arch`` and the
   dataset's class count; the saliency mask fits that model; the forget-set inputs (score, proxy,
   model files) exist; the run directory does not hold a finished run (unless ``--overwrite``).
2. **Forget set**: loaded from or built into ``<ckpts>/forget_sets/<name>.npz``
   (:mod:`forget_sets.builder`). ``--es`` prints the entanglement score here and stops.
3. **Model**: retrain starts from a fresh initialization (seeded with ``--train_seed``, default
   ``--seed``); every other method from the start model.
4. **Method** from the registry (:mod:`unlearn`), timed alone (``unlearn_seconds``). A NaN or
   infinite loss stops the run: one line on stderr, exit status 1, no metrics.json.
5. **Evaluate** (:mod:`evaluation.evaluate`) and write the run directory

       <ckpts>/unlearn/<forget set name>/<model name>/<method tag>/seed<seed>/
           config.json  model.pt (unless --no_save)  outputs.npz  metrics.json (last: marks it complete)

   ``<model name>`` is the start model's run-directory name (or file stem): unlearning runs of
   different pretrained models (architectures, SGD vs SAM pretraining) never collide. Retrain's is
   the model named by ``--mask`` when given, else the default pretrained run's name, so a retrain
   reference sits beside the runs it is the reference for.

Retrain recipe: the pretraining recipe (SGD momentum ``--momentum``, ``--weight_decay``, cosine with
``--warmup``, ``--batch_size``, SAM with ``--sam``), run for ``--unlearn_epochs`` epochs at
``--unlearn_lr``: the original README passes those two equal to the pretraining ones ("set
``--unlearn_epochs`` and ``--unlearn_lr`` the same way as you pretrain").

SCRUB flags left unset take RUM's and SCRUB's published values: msteps 4, kd_T 4.0 (RUM README),
gamma 0.99 and beta 0.001 (SCRUB's CIFAR settings: CE weight 0.99, KL weight 0.001).
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.errors import UserError

SCRUB_DEFAULTS: dict[str, float] = {"msteps": 4, "kd_T": 4.0, "gamma": 0.99, "beta": 0.001}
NOOP = ("raw", "original")
NOT_ITERATIVE = NOOP + ("wfisher",)
ALPHA_METHODS = ("NG", "FT_prune", "FT_l1", "wfisher")


class Diverged(Exception):
    """The unlearning loss became NaN or infinite (exit status 1)."""


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def model_name_of(model_file: Path) -> str:
    """A run directory's name, or a checkpoint file's stem (``x.pth.tar`` -> ``x``)."""
    p = Path(model_file)
    if p.name == "model.pt":
        return _safe(p.parent.name)
    name = p.name
    for suffix in (".pth.tar", ".pt", ".pth", ".tar", ".ckpt"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return _safe(name)


def method_tag(args: argparse.Namespace) -> str:
    """The method and the hyper-parameters that define the run, e.g. ``FT_lr0.01_ep10_sgd``,
    ``NG_alpha0.99_lr0.01_ep5_sgd_sam-min_rho1_lamb1_adaptive_sep-min-max_mask<stem>``,
    ``retrain`` (``retrain_sam-...`` with --sam), ``original``, ``wfisher_alpha0.99``."""
    from utils.pretrained import sam_config

    m = args.unlearn
    if m in NOOP:
        return m
    sam = sam_config(args)
    if m == "retrain":
        return "retrain" + (f"_{sam.tag()}" if sam is not None else "")
    parts = [m]
    if m in ALPHA_METHODS:
        parts.append(f"alpha{args.alpha:g}")
    if m == "SCRUB":
        parts += [f"msteps{args.msteps}", f"kdT{args.kd_T:g}", f"beta{args.beta:g}", f"gamma{args.gamma:g}"]
    if m in ("FT_prune", "FT_l1") and args.no_l1_epochs:
        parts.append(f"nol1{args.no_l1_epochs}")
    if m not in NOT_ITERATIVE:
        parts += [f"lr{args.unlearn_lr:g}", f"ep{args.unlearn_epochs}"] + optimizer_tag_parts(args)
        if args.separate:
            parts.append(f"sep-{args.separate[0]}-{args.separate[1]}")
    if args.path:
        stem = _safe(Path(args.path).name.rsplit(".", 1)[0])
        parts.append(stem if stem.startswith("mask") else "mask" + stem)
    return "_".join(parts)


def optimizer_tag_parts(args: argparse.Namespace) -> list[str]:
    """Tag parts every iterative method shares: the optimizer, and batch size, milestones,
    augmentation and SAM where they differ from the defaults."""
    from utils.pretrained import sam_config

    parts = [args.unlearn_optimizer]
    if args.batch_size != 256:
        parts.append(f"bs{args.batch_size}")
    if list(args.decreasing_lr) != [91, 136]:
        parts.append("ms" + "-".join(str(x) for x in args.decreasing_lr))
    if args.no_aug:
        parts.append("noaug")
    sam = sam_config(args)
    if sam is not None:
        parts.append(sam.tag())
    return parts


def run_dir_for(args: argparse.Namespace, forget_set: str, model_name: str) -> Path:
    return Path(args.ckpts) / "unlearn" / forget_set / model_name / method_tag(args) / f"seed{args.seed}"


def _device(args: argparse.Namespace, local_rank: int | None = None) -> torch.device:
    from trainer.device import resolve_device

    dev = resolve_device(args.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", args.gpu if local_rank is None else local_rank)
    return dev


def check_method(args: argparse.Namespace, allowed: tuple[str, ...] | None = None, *,
                 mask_in_process: bool = False) -> None:
    """Validate ``args.unlearn`` and its method flags (fills SCRUB's unset flags with
    :data:`SCRUB_DEFAULTS`). ``mask_in_process``: the caller computes SalUn's saliency mask itself
    (main_rum.py), so ``RL`` does not need ``--path``."""
    from arg_parser import UNLEARN_METHODS
    from unlearn import _REGISTRY

    accepted = tuple(m for m in (allowed or UNLEARN_METHODS) if m != "RUM")
    if args.unlearn is None and args.es and allowed is None:
        return  # --es runs no method (the original demanded some valid name; any is accepted here too)
    if args.unlearn is None:
        raise UserError(f"--unlearn is required; accepted: {', '.join(accepted)}")
    if args.unlearn == "RUM":
        raise UserError("--unlearn RUM: the RUM meta-algorithm runs in its own scripts: python main_rum.py "
                        "(groups by memorization) or python main_rum_proxy.py (groups by a memorization proxy), "
                        "with the same forget-set flags")
    if allowed is not None and args.unlearn not in allowed:
        raise UserError(f"--unlearn {args.unlearn}: this script runs {', '.join(allowed)} only"
                        + ("; use main_forget.py for the other methods" if "RL" in allowed else ""))
    target = _REGISTRY.get(args.unlearn)
    if target is None:
        raise UserError(f"--unlearn {args.unlearn!r}: unknown method; accepted: {', '.join(accepted)}")
    module = target.split(":")[0]
    if importlib.util.find_spec(module) is None:
        raise UserError(f"--unlearn {args.unlearn}: not available in this installation (module {module} is missing)")
    if args.separate and args.unlearn != "NG":
        raise UserError(f"--separate {' '.join(args.separate)}: Sharp MinMax applies to --unlearn NG only, "
                        f"not {args.unlearn}")
    if args.separate and not args.path:
        raise UserError(f"--separate {' '.join(args.separate)} needs --path MASK_FILE (the saliency mask that "
                        f"splits the weights into forget and retain parts; see generate_mask.py)")
    if args.unlearn == "RL" and not args.path and not mask_in_process:
        raise UserError("--unlearn RL (SalUn) needs --path MASK_FILE, a saliency mask written by generate_mask.py; "
                        "--unlearn RL_og is random labelling without a mask")
    if args.path and args.unlearn in ("retrain",) + NOOP:
        raise UserError(f"--path {args.path}: a saliency mask does not apply to --unlearn {args.unlearn}")
    if args.unlearn == "SCRUB":
        for k, v in SCRUB_DEFAULTS.items():
            if getattr(args, k) is None:
                setattr(args, k, type(v)(v))
        if args.msteps < 0 or args.kd_T <= 0:
            raise UserError(f"--msteps {args.msteps} / --kd_T {args.kd_T}: need msteps >= 0 and kd_T > 0")
    if args.unlearn == "NG" and not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha {args.alpha}: NG's retain weight must be in [0, 1]")


_check_method = check_method


def make_config(args: argparse.Namespace, mask: dict | None) -> Any:
    from trainer.fit import Recipe
    from unlearn.base import UnlearnConfig
    from utils.pretrained import sam_config

    sam = sam_config(args)
    recipe = None
    if args.unlearn == "retrain":
        recipe = Recipe(epochs=args.unlearn_epochs, lr=args.unlearn_lr, batch_size=args.batch_size,
                        momentum=args.momentum, weight_decay=args.weight_decay, warmup=args.warmup,
                        augment=not args.no_aug, sam=sam)
    return UnlearnConfig(
        lr=args.unlearn_lr, epochs=args.unlearn_epochs, batch_size=args.batch_size, optimizer=args.unlearn_optimizer,
        momentum=args.momentum, weight_decay=args.weight_decay, milestones=tuple(args.decreasing_lr),
        augment=not args.no_aug, sam=sam, separate=tuple(args.separate) if args.separate else None, mask=mask,
        alpha=args.alpha, beta=args.beta, gamma=args.gamma, msteps=args.msteps, kd_T=args.kd_T,
        no_l1_epochs=args.no_l1_epochs, recipe=recipe)


def hparams_of(args: argparse.Namespace, cfg: Any, mask_fraction: float | None) -> dict[str, Any]:
    h: dict[str, Any] = {"lr": cfg.lr, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                         "optimizer": cfg.optimizer, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay,
                         "milestones": list(cfg.milestones), "augment": cfg.augment,
                         "separate": list(cfg.separate) if cfg.separate else None,
                         "mask_file": args.path, "mask_fraction": mask_fraction}
    if args.unlearn in ALPHA_METHODS:
        h["alpha"] = cfg.alpha
    if args.unlearn == "SCRUB":
        h.update(msteps=cfg.msteps, kd_T=cfg.kd_T, beta=cfg.beta, gamma=cfg.gamma)
    if args.unlearn in ("FT_prune", "FT_l1"):
        h["no_l1_epochs"] = cfg.no_l1_epochs
    if cfg.recipe is not None:
        r = asdict(cfg.recipe)
        r["sam"] = None if cfg.recipe.sam is None else asdict(cfg.recipe.sam)
        h = {"recipe": r, "train_seed": args.train_seed if args.train_seed is not None else args.seed,
             "schedule": "cosine" + (f" with {args.warmup} warm-up epochs" if args.warmup else "")}
    return h


def _build_model(args: argparse.Namespace, data) -> torch.nn.Module:
    from models import build_model

    return build_model(args.arch, data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                       mean=data.mean, std=data.std, imagenet_arch=args.imagenet_arch)


def _entanglement(args, model, data, fs, device) -> None:
    from evaluation.entanglement import entanglement_score, entanglement_score_normalized
    from forget_sets.builder import embed_ids

    emb_r = embed_ids(model, data, fs.retain_ids, device=device)
    emb_f = embed_ids(model, data, fs.forget_ids, device=device)
    print(f"entanglement score (ES, RUM) of {len(fs.forget_ids)} forget vs {len(fs.retain_ids)} retain: "
          f"{entanglement_score(emb_r, emb_f):.6g}")
    if args.es_normalized:
        print(f"normalized entanglement score (sharp-unlearn): {entanglement_score_normalized(emb_r, emb_f):.6g}")


def run_unlearning(args: argparse.Namespace, prog: str = "main_forget.py",
                   allowed: tuple[str, ...] | None = None) -> int:
    """The whole pipeline (see the module docstring); returns the exit status."""
    from trainer.device import prepare_model, resolve_device
    from trainer.distributed import finish, init_distributed, unwrap, wrap_model
    from unlearn.base import UnlearnTask
    from utils.rundir import check_writable, is_complete, prepare_run_dir, run_config, save_model, \
        write_config, write_metrics, write_outputs
    from utils.data import load_data
    from evaluation.evaluate import evaluate
    from forget_sets.builder import obtain, plan_forget_set
    from forget_sets.file import sha256_file
    from utils.pretrained import default_pretrained, load_into, resolve_model_file

    # ---- 1. validation: nothing is written before this block ends ----------------------------
    _check_method(args, allowed)
    retrain = args.unlearn == "retrain"
    info = init_distributed(resolve_device(args.device).type)
    if info.enabled and not retrain:
        raise UserError(f"--unlearn {args.unlearn}: only retrain runs data-parallel under torchrun; "
                        f"run the other methods in one process")
    device = _device(args, info.local_rank if info.enabled else None)
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    model = _build_model(args, data)
    if retrain and args.mask is None and not args.es:
        model_file = None  # retrain needs no start model
    else:
        model_file = resolve_model_file(args.mask, args)
        # retrain only checks that --mask fits (it names the model the retrain is a reference for)
        load_into(model, model_file, arch=args.arch, num_classes=data.num_classes)
    mask = None
    mask_fraction = None
    if args.path:
        from unlearn.saliency import load_mask, mask_fraction as _fraction

        mask = load_mask(args.path, model)
        mask_fraction = _fraction(mask)
    plan = plan_forget_set(args, data, model_file=model_file)
    model_name = model_name_of(model_file) if model_file is not None else default_pretrained(args).name
    if not args.es:
        run_dir = run_dir_for(args, plan.name, model_name)
        if is_complete(run_dir) and not args.overwrite:
            raise UserError(f"{run_dir} already holds a finished run; pass --overwrite to replace it")
        if (run_dir / "checkpoint.pt").is_file() and not (args.overwrite or (args.resume and retrain)):
            raise UserError(f"{run_dir} holds an unfinished retrain; pass --resume to continue it or --overwrite "
                            f"to restart")
        check_writable(run_dir, "--ckpts")

    # ---- 2. forget set ------------------------------------------------------------------------
    fs = obtain(plan, args, data, device=device)
    forget_ids = np.asarray(fs.forget_ids, np.int64)
    retain_ids = np.asarray(fs.retain_ids, np.int64)
    model = prepare_model(model, device)
    if args.es:
        _entanglement(args, model, data, fs, device)
        return 0

    # ---- 3. model -----------------------------------------------------------------------------
    if retrain:
        torch.manual_seed(args.train_seed if args.train_seed is not None else args.seed)
        model = prepare_model(_build_model(args, data), device)
        print(f"retrain: {args.unlearn_epochs} epochs at lr {args.unlearn_lr:g} (--unlearn_epochs/--unlearn_lr; "
              f"pretraining flags: --epochs {args.epochs} --lr {args.lr:g}), batch {args.batch_size}, "
              f"SGD + cosine" + (" + SAM" if args.sam else ""))
    if mask is not None:
        params = dict(model.named_parameters())
        mask = {n: m.to(params[n].device) for n, m in mask.items()}
    cfg = make_config(args, mask)
    tag = method_tag(args)
    fs_file = Path(plan.path)
    fs_sha = sha256_file(fs_file)
    if info.is_main:
        run_dir = prepare_run_dir(run_dir, overwrite=args.overwrite, resume=args.resume and retrain)
        write_config(run_dir, run_config(args, stage="unlearn", prog=prog, method=args.unlearn, method_tag=tag,
                                         forget_set=plan.name, forget_set_file=str(fs_file),
                                         forget_set_sha256=fs_sha, pretrained=None if retrain else str(model_file),
                                         model_name=model_name, device=str(device), world_size=info.world))
    if retrain:
        cfg.run_dir = run_dir  # retrain checkpoints every epoch (unlearn/retrain.py)
        cfg.resume = bool(args.resume)
        cfg.dist_info = info  # data-parallel under torchrun (trainer/distributed.py)
    if info.enabled:
        torch.distributed.barrier()
        model = wrap_model(model, info, device)
    if info.is_main:
        print(f"{args.unlearn} on {plan.name} ({len(forget_ids)} forget, {len(retain_ids)} retain) "
              f"from {'a fresh initialization' if retrain else model_file} on {device}"
              + (f" x{info.world} ranks" if info.enabled else "") + f" -> {run_dir}")

    # ---- 4. the method, timed alone -----------------------------------------------------------
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    task = UnlearnTask(model=model, data=data.to(device), forget_ids=forget_ids, retain_ids=retain_ids,
                       device=device, seed=args.seed, generator=gen)
    seconds = run_timed(args, task, cfg, device)
    model = unwrap(task.model)
    if not info.is_main:  # only rank 0 evaluates and writes
        finish(info)

    # ---- 5. evaluation and artifacts ----------------------------------------------------------
    ev = evaluate(model, task.data, fs, device, seed=args.seed)
    metrics = unlearn_metrics(args, method=args.unlearn, tag=tag, data=data, forget_set=plan.name,
                              forget_kind=plan.kind, fs=fs, fs_file=fs_file, fs_sha=fs_sha, ev=ev, seconds=seconds,
                              pretrained=None if retrain else model_file, model_name=model_name,
                              hparams=hparams_of(args, cfg, mask_fraction), device=device)
    if not args.no_save:
        save_model(run_dir, model, arch=args.arch, num_classes=data.num_classes, dataset=data.name)
    write_outputs(run_dir, ev.outputs)
    if retrain:
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    write_metrics(run_dir, metrics)
    print(summary_line(metrics, run_dir))
    if metrics["collapsed"]:
        print(f"warning: the model collapsed (retain accuracy {_pct(metrics['accuracy']['retain'])} is at chance "
              f"level); its ToW is not meaningful. Flagged in metrics.json.")
    finish(info)  # data-parallel: wait for the other ranks and exit (no-op in one process)
    return 0


def run_timed(args: argparse.Namespace, task: Any, cfg: Any, device: torch.device) -> float:
    """Run the method ``args.unlearn`` on ``task`` (``task.model`` is modified or replaced), timed
    alone (CUDA synchronized); returns the seconds. A NaN/infinite loss or non-finite weights
    raise :class:`Diverged` naming ``--unlearn`` and ``--unlearn_lr``."""
    from trainer.step import NonFiniteLoss
    from unlearn import get_method

    method = get_method(args.unlearn)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    try:
        method(task, cfg)
    except NonFiniteLoss as e:
        raise Diverged(f"--unlearn {args.unlearn} diverged ({e}); nothing was saved as finished. "
                       f"Lower --unlearn_lr (now {args.unlearn_lr:g}) or the number of epochs") from None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    if not all(bool(torch.isfinite(p).all()) for p in task.model.parameters()):
        raise Diverged(f"--unlearn {args.unlearn} left non-finite weights; nothing was saved as finished. "
                       f"Lower --unlearn_lr (now {args.unlearn_lr:g})")
    return seconds


def unlearn_metrics(args: argparse.Namespace, *, method: str, tag: str, data: Any, forget_set: str,
                    forget_kind: str, fs: Any, fs_file: Path, fs_sha: str, ev: Any, seconds: float,
                    pretrained: Path | None, model_name: str, hparams: dict[str, Any],
                    device: torch.device) -> dict[str, Any]:
    """The ``metrics.json`` record of an unlearning run (the schema analysis.py reads)."""
    from forget_sets.builder import forget_ids_sha256
    from utils.pretrained import sam_config

    m = fs.manifest
    sam = sam_config(args)
    return {
        "method": method, "method_tag": tag, "dataset": data.name, "arch": args.arch, "seed": int(args.seed),
        "forget_set": forget_set, "forget_set_file": str(fs_file), "forget_set_sha256": fs_sha,
        "forget_ids_sha256": forget_ids_sha256(fs), "forget_kind": m.get("kind", forget_kind),
        "mem_level": m.get("level") if m.get("kind") in ("mem", "proxy") else None,
        "mem_proxy": m.get("proxy") if m.get("kind") == "proxy" else None,
        "group_index": m.get("group") if m.get("kind") == "es" else None,
        "num_forget": int(len(fs.forget_ids)), "num_retain": int(len(fs.retain_ids)),
        **ev.metrics,
        "unlearn_seconds": seconds,
        "pretrained": None if pretrained is None else str(pretrained), "model_name": model_name,
        "sam": None if sam is None else {**asdict(sam), "separate": list(args.separate) if args.separate else None},
        "hparams": hparams,
        "device": str(device),
    }


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def summary_line(metrics: dict[str, Any], run_dir: Path) -> str:
    a = metrics["accuracy"]
    conf = metrics["mia"].get("confidence")
    return (f"{metrics['method_tag']}: retain {_pct(a['retain'])}  forget {_pct(a['forget'])}  test {_pct(a['test'])}  "
            f"MIA(confidence) {'n/a' if conf is None else f'{conf:.3f}'}  {metrics['unlearn_seconds']:.1f}s"
            + ("  [COLLAPSED]" if metrics["collapsed"] else "") + f"  -> {run_dir}")


def main(prog: str, allowed: tuple[str, ...] | None = None, argv: list[str] | None = None) -> int:
    """Entry point of main_forget.py / main_random.py: parse, run; a divergence is exit status 1."""
    from arg_parser import parse_args

    args = parse_args(argv, prog=prog)
    try:
        return run_unlearning(args, prog, allowed)
    except Diverged as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 1


__all__ = ["run_unlearning", "method_tag", "run_dir_for", "model_name_of", "main", "Diverged", "SCRUB_DEFAULTS",
           "check_method", "make_config", "hparams_of", "run_timed", "unlearn_metrics", "summary_line"]
