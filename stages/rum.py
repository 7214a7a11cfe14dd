"""main_rum.py and main_rum_proxy.py: RUM, the forget set refined into memorization groups and
unlearned group by group (rum-spec §1).

1. **Forget set**: exactly the one main_forget.py builds from the same flags (``--mem mix`` in the
   README), so the final run pairs with ``main_forget.py --unlearn retrain`` of the same forget set
   and seed. ``--shuffle`` does not touch the forget set here; it shuffles the groups.
2. **Refinement** (:mod:`unlearn.rum`): the forget set sorted by its memorization key (true scores,
   or ``--mem_proxy`` with its sign) is cut into ``--rum_groups`` K groups, processed low -> high.
3. **Meta step**: one method per group, each step starting from the previous step's model; step
   j's retain set is every training example minus groups 0..j. SalUn steps compute their saliency
   mask in-process on the step's group.
4. **Output**: ``<ckpts>/unlearn/<forget set>/<model>/<RUM tag>/seed<seed>/`` evaluated like
   main_forget.py's runs (metrics.json with method "RUM"), plus ``step<j>_<method>/`` per step
   (``step_metrics.json``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from arg_parser import build_parser, given_flags
from evaluation.evaluate import evaluate
from forget_sets.file import ForgetSet, sha256_file
from forget_sets.kinds import ForgetPlan, ForgetSpec, memorization_scores, plan_forget_set, proxy_file_for
from forget_sets.select import memorization_groups
from forget_sets.store import check_can_save, forget_ids_sha256, load_or_build
from memorization.proxies import PROXIES, PROXY_SIGN
from memorization.scores import load_proxy
from stages import configs
from stages.mask import mask_order
from stages.common import FORGET_GROUPS, finish_run, finished_run, main_of, pct, run_timed, start_model, unlearn_metrics
from stages.common import wandb_run
from trainer.device import prepare_model, synchronize
from unlearn.base import UnlearnTask
from unlearn.config import hparams_record, optimizer_tag_parts, setting_parts
from unlearn.rum import (DEFAULT_MASK_RATIO, DEFAULT_PLANS, NONE, STEP_METHODS, Step, StepHparams, group_labels,
                         memorization_key, refine, resolve_steps, rum_tag, run_meta, shuffled_groups,
                         step_retain_sets)
from unlearn.saliency import check_ratio, forget_gradients, mask_fraction, saliency_masks
from utils import paths
from utils.data import ImageData, augment_record, load_data
from utils.errors import UserError
from utils.lock import run_lock
from utils.io import atomic_write_json
from utils.runlog import EpochLog
from utils.rundir import check_writable, commit_run_dir, prepare_run_dir, run_config, save_model, write_config, \
    write_outputs

DEFAULT_PROXY = "confidence"
GROUPING_HELP = {
    "mem": ("RUM: split the forget set into --rum_groups K groups (default 3) by true memorization score and "
            "unlearn them one after another, low -> high memorization, each step starting from the previous "
            "step's model (step j's retain set: all training examples minus groups 0..j)."),
    "proxy": ("RUM with a memorization proxy: split the forget set into --rum_groups K groups (default 3) by "
              "--mem_proxy NAME (default confidence, from the pretrained run's proxies.npz or --proxy_file; "
              "negatively correlated proxies are flipped, so the order is low -> high memorization) and unlearn "
              "them one after another, each step starting from the previous step's model."),
}
EPILOG = {
    "mem": "default plan (no --rum_methods, no --unlearn, or --unlearn RUM): none / FT (10 epochs, lr 0.1) / "
           "RL = SalUn (5 epochs, lr 0.1).",
    "proxy": "default plan (no --rum_methods, no --unlearn, or --unlearn RUM): NG / NG / NG with --alpha "
             "0.99/0.97/0.97, epochs 5/5/10, lr 0.01/0.01/0.001.",
}
COMMON_EPILOG = (
    f" Methods: --rum_methods m0,...,m(K-1) ({', '.join(STEP_METHODS)}, none = skip), "
    "else --unlearn M = M on every group, else the default plan. Per step: --rum_lr / --rum_epochs / --rum_alpha "
    "(K values) win, then --unlearn_lr / --unlearn_epochs / --alpha when given, then the default plan's values, "
    "then those flags' defaults. SalUn steps compute their saliency mask in-process on the step's group "
    "(first --mask_ratio, default 0.5; --mask_order). --shuffle: random groups of the same sizes "
    "(RandomState(--seed)); the forget set itself is unchanged. See docs/stage_rum.md.")


def main(prog: str, grouping: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of main_rum.py (``grouping`` "mem") and main_rum_proxy.py ("proxy")."""
    return main_of(run, prog, argv, description=GROUPING_HELP[grouping],
                   epilog=EPILOG[grouping] + COMMON_EPILOG, grouping=grouping, command_line=argv)


# --------------------------------------------------------------------------------------------
# Flags -> plan (no file is read)
# --------------------------------------------------------------------------------------------

@dataclass
class RumPlan:
    """The validated RUM flags."""

    k: int  # number of groups
    steps: list[StepHparams]  # one per group, low -> high memorization
    step_args: list[argparse.Namespace]  # each step's flags, as main_forget.py would see them
    source: str  # where the plan came from (default plan, --rum_methods, --unlearn)
    tag: str  # the run tag
    grouping: str  # "mem" | "proxy"
    proxy: str | None
    mask_ratio: float


def _canon_method(name: str, flag: str) -> str:
    by_lower = {m.lower(): m for m in STEP_METHODS + (NONE,)}
    m = by_lower.get(str(name).strip().lower())
    if m is None:
        raise UserError(f"{flag} {name!r}: not a method a RUM step can run; accepted: "
                        f"{', '.join(STEP_METHODS + (NONE,))}")
    return m


def _check_rum_flags(args: argparse.Namespace, prog: str, grouping: str) -> str | None:
    """Flags that do not apply to RUM; returns the proxy (proxy grouping)."""
    for flag, bad in (("--es", args.es), ("--resume", args.resume)):
        if bad:
            raise UserError(f"{flag}: does not apply to {prog} (use main_forget.py)")
    if args.aug and args.no_aug:
        raise UserError("--aug --no_aug: contradictory; RUM's steps run without augmentation unless --aug")
    if args.path:
        raise UserError(f"--path {args.path}: {prog} computes each SalUn step's saliency mask in-process on that "
                        f"step's group (ratio --mask_ratio, order --mask_order); a mask file is not used")
    if args.separate:
        raise UserError(f"--separate {' '.join(args.separate)}: Sharp MinMax needs a mask file and is not a RUM "
                        f"step; use main_forget.py")
    if grouping == "mem":
        if args.mem_proxy is not None:
            raise UserError(f"--mem_proxy {args.mem_proxy}: main_rum.py groups by true memorization scores; "
                            f"use main_rum_proxy.py --mem_proxy {args.mem_proxy} to group by a proxy")
        return None
    proxy = str(args.mem_proxy) if args.mem_proxy is not None else DEFAULT_PROXY
    if proxy not in PROXIES:
        raise UserError(f"--mem_proxy {proxy!r}: unknown proxy; accepted: {', '.join(PROXIES)}")
    return proxy


def _rum_methods(args: argparse.Namespace, k: int, grouping: str) -> tuple[list[str] | None, str | None]:
    """``(--rum_methods, --unlearn)`` canonicalized and checked against K."""
    default = DEFAULT_PLANS[grouping]
    methods = None
    if args.rum_methods is not None:
        methods = [_canon_method(m, "--rum_methods") for m in args.rum_methods]
        if len(methods) != k:
            raise UserError(f"--rum_methods {','.join(args.rum_methods)}: {len(methods)} methods, but there are "
                            f"--rum_groups {k} groups (one method per group, low -> high memorization)")
    unlearn = args.unlearn
    if unlearn == "RUM":
        unlearn = None  # the default plan
    elif unlearn is not None and methods is None:
        unlearn = _canon_method(unlearn, "--unlearn")
        if unlearn == NONE:
            raise UserError("--unlearn none: nothing to run; accepted: a method for every group")
    if methods is None and unlearn is None and k != len(default):
        raise UserError(f"--rum_groups {k}: the default plan ({'/'.join(s.method for s in default)}) has "
                        f"{len(default)} steps; pass --rum_methods with {k} methods or --unlearn METHOD")
    for flag, values in (("--rum_lr", args.rum_lr), ("--rum_epochs", args.rum_epochs), ("--rum_alpha", args.rum_alpha)):
        if values is not None and len(values) != k:  # each value's range: arg_parser.DOMAINS
            raise UserError(f"{flag} {','.join(f'{v:g}' for v in values)}: {len(values)} values, expected {k} "
                            f"(one per group, low -> high memorization; --rum_groups {k})")
    return methods, unlearn


def plan_rum(args: argparse.Namespace, argv: Sequence[str] | None, prog: str, grouping: str) -> RumPlan:
    """Validate the RUM flags and resolve each step's method and hyperparameters."""
    proxy = _check_rum_flags(args, prog, grouping)
    k = int(args.rum_groups)
    methods, unlearn = _rum_methods(args, k, grouping)
    given = given_flags(argv, ("unlearn_lr", "unlearn_epochs", "alpha"), prog)
    defaults = build_parser(prog).parse_args([])
    steps, source = resolve_steps(
        k, methods=methods, unlearn=unlearn, default=DEFAULT_PLANS[grouping], rum_lr=args.rum_lr,
        rum_epochs=args.rum_epochs, rum_alpha=args.rum_alpha,
        lr=args.unlearn_lr if "unlearn_lr" in given else None,
        epochs=args.unlearn_epochs if "unlearn_epochs" in given else None,
        alpha=args.alpha if "alpha" in given else None,
        flag_defaults=(defaults.unlearn_lr, defaults.unlearn_epochs, defaults.alpha))
    if args.unlearn not in (None, "RUM") and methods is not None:
        print(f"note: --rum_methods {','.join(methods)} given; --unlearn {args.unlearn} is not used")
    step_args = []
    for j, s in enumerate(steps):
        if s.method == "NG" and not 0.0 <= s.alpha <= 1.0:
            raise UserError(f"--rum_alpha: step {j} (NG) has alpha {s.alpha:g}; NG's retain weight must be in [0, 1]")
        # RUM's steps run without augmentation unless --aug (DESIGN.md §7.7)
        ns = argparse.Namespace(**{**vars(args), "unlearn": None if s.method == NONE else s.method,
                                   "unlearn_lr": s.lr, "unlearn_epochs": s.epochs, "alpha": s.alpha, "path": None,
                                   "no_aug": not args.aug})
        if s.method != NONE:
            configs.check_method(ns, None, mask_in_process=True)
        step_args.append(ns)
    ratio = check_ratio(args.mask_ratio[0]) if args.mask_ratio else DEFAULT_MASK_RATIO
    if args.mask_ratio and len(args.mask_ratio) > 1 and any(s.method == "RL" for s in steps):
        print(f"note: --mask_ratio {','.join(f'{q:g}' for q in args.mask_ratio)}: SalUn steps use the first, {ratio:g}")
    scrub = None
    for s, ns in zip(steps, step_args):
        if s.method == "SCRUB":
            scrub = f"msteps{ns.msteps}_kdT{ns.kd_T:g}_beta{ns.beta:g}_gamma{ns.gamma:g}"
    cfg = configs.unlearn_config(argparse.Namespace(**{**vars(args), "no_aug": not args.aug}))
    common = [p for p in optimizer_tag_parts(cfg) if p != "noaug"] + (["aug"] if args.aug else []) + setting_parts(cfg)
    tag = rum_tag(steps, grouping="mem" if grouping == "mem" else f"proxy-{proxy}", shuffle=bool(args.shuffle),
                  common=common, mask_ratio=ratio, mask_order=mask_order(args), scrub=scrub)
    return RumPlan(k=k, steps=steps, step_args=step_args, source=source, tag=tag, grouping=grouping, proxy=proxy,
                   mask_ratio=ratio)


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------

@dataclass
class RumJob:
    """Everything validated before the first file is written."""

    args: argparse.Namespace
    plan: RumPlan
    device: torch.device
    data: ImageData
    model: torch.nn.Module
    model_file: Path
    model_name: str
    spec: ForgetSpec  # the forget set main_forget.py builds from the same flags
    fs_plan: ForgetPlan
    key_by_id: np.ndarray  # memorization key (rises with memorization), indexed by global id
    key_info: dict[str, Any]
    scores: np.ndarray | None  # true memorization scores (mem grouping)
    run_dir: Path
    step_records: list[dict[str, Any]] = field(default_factory=list)
    wandb: Any = None  # the W&B run mirroring the steps' log.jsonl rows (--wandb-*), or None


def prepare(args: argparse.Namespace, prog: str, grouping: str, argv: Sequence[str] | None) -> RumJob:
    """Validate everything (flags, start model, forget-set inputs, memorization key, run directory)."""
    rp = plan_rum(args, argv, prog, grouping)
    device = configs.device(args)
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    model_file = configs.resolve_start_model(args)
    model = start_model(args, data, model_file)
    # the forget set main_forget.py builds from the same flags; --shuffle and --mem_proxy are RUM's here
    spec = configs.forget_spec(args, start_model=model_file, mem_proxy=None, shuffle=False)
    fs_plan = plan_forget_set(spec, data)
    check_can_save(fs_plan)
    n_planned = fs_plan.manifest.get("n")
    if n_planned is not None and int(n_planned) < rp.k:
        raise UserError(f"--rum_groups {rp.k}: more groups than the {n_planned} examples of the forget set")
    key_by_id = np.full(int(np.max(data.train_ids)) + 1, np.nan)  # indexed by global id
    scores = None
    if grouping == "mem":
        key_file, scores = memorization_scores(spec, data)
        key_by_id[data.train_ids] = scores[data.train_ids]
        key_info = {"grouping": "memorization", "proxy": None, "proxy_negative": None, "score_file": str(key_file)}
    else:
        key_file = proxy_file_for(spec, rp.proxy)
        values = load_proxy(key_file, rp.proxy, data.train_ids)
        key_by_id[data.train_ids] = memorization_key(values, negative=PROXY_SIGN[rp.proxy])
        key_info = {"grouping": "proxy", "proxy": rp.proxy, "proxy_negative": PROXY_SIGN[rp.proxy],
                    "proxy_file": str(key_file)}
    key_info["key_sha256"] = sha256_file(key_file)
    model_name = paths.model_name_of(model_file)
    run_dir = paths.unlearn_run_dir(args.ckpts, fs_plan.name, model_name, rp.tag, args.seed)
    check_writable(run_dir, "--ckpts")
    return RumJob(args, rp, device, data, model, model_file, model_name, spec, fs_plan, key_by_id, key_info, scores,
                  run_dir)


def make_groups(job: RumJob, fs: ForgetSet) -> tuple[list[np.ndarray], list[int], bool | None]:
    """The K groups in processing order, their sizes before any shuffle, and whether they are the
    mix set's low/mid/high parts (None when that does not apply)."""
    args, k = job.args, job.plan.k
    forget_ids = np.asarray(fs.forget_ids, np.int64)
    if len(forget_ids) < k:
        raise UserError(f"--rum_groups {k}: more groups than the {len(forget_ids)} examples of the forget set")
    groups = refine(forget_ids, job.key_by_id[forget_ids], k)
    sizes = [len(g) for g in groups]
    if args.shuffle:
        groups = shuffled_groups(forget_ids, sizes, int(args.seed))
    m = fs.manifest
    matches_mix = None
    if job.plan.grouping == "mem" and k == 3 and not args.shuffle and m.get("kind") == "mem" \
            and m.get("level") == "mix":
        n, train_ids = int(m["n"]), job.data.train_ids
        g = memorization_groups(train_ids, job.scores[train_ids], n)
        parts = [np.asarray(g["low"])[(-n) // 3:], np.asarray(g["mid"])[: n // 3], np.asarray(g["high"])[: n // 3]]
        matches_mix = all(set(a.tolist()) == set(b.tolist()) for a, b in zip(parts, groups))
        if not matches_mix:
            print("note: the score-sorted groups differ from the mix set's low/mid/high parts (their score ranges "
                  "overlap); the groups are the score terciles of the forget set")
    return groups, sizes, matches_mix


def run(args: argparse.Namespace, prog: str, grouping: str, command_line: Sequence[str] | None = None) -> int:
    """The whole stage (see the module docstring); ``command_line`` (default ``sys.argv[1:]``) tells
    which flags were given. Returns the exit status."""
    job = prepare(args, prog, grouping, command_line)
    identity = {"forget_set": job.fs_plan.name, "model_name": job.model_name, "method_tag": job.plan.tag,
                "seed": int(args.seed), "start_model_sha256": sha256_file(job.model_file),
                "key_sha256": job.key_info["key_sha256"]}
    if finished_run(job.run_dir, args, prog, FORGET_GROUPS + ("rum", "masks"), identity):
        return 0
    with run_lock(job.run_dir):
        if finished_run(job.run_dir, args, prog, FORGET_GROUPS + ("rum", "masks"), identity):
            return 0  # finished by another run while this one started
        return _run_rum(args, prog, grouping, job, identity)


def _run_rum(args: argparse.Namespace, prog: str, grouping: str, job: RumJob, identity: dict) -> int:
    """Build the forget set and its groups, run the steps and write the run (under the run's lock)."""
    rp, k = job.plan, job.plan.k
    fs = load_or_build(job.fs_plan, job.spec, job.data, device=job.device)
    groups, sizes, matches_mix = make_groups(job, fs)
    labels = group_labels(k, bool(args.shuffle))
    retains = step_retain_sets(fs.retain_ids, groups)
    print(f"RUM on {job.fs_plan.name}: {k} groups by "
          + ("random shuffle" if args.shuffle else "memorization" if grouping == "mem" else f"proxy {rp.proxy}")
          + f", processed {' -> '.join(f'{lab} ({len(gr)})' for lab, gr in zip(labels, groups))}: "
          + ", ".join(f"{s.method}" for s in rp.steps))

    final = job.run_dir
    run_dir = job.run_dir = prepare_run_dir(final, overwrite=args.overwrite)  # steps are written there too
    for stale in run_dir.glob("step*"):  # an unfinished earlier attempt of the same run
        if stale.is_dir():
            shutil.rmtree(stale)
    fs_file = Path(job.fs_plan.path)
    fs_sha = sha256_file(fs_file)
    write_config(run_dir, run_config(vars(args), stage="unlearn", prog=prog, method="RUM", method_tag=rp.tag,
                                     forget_set=job.fs_plan.name, forget_set_file=str(fs_file),
                                     forget_set_sha256=fs_sha, pretrained=str(job.model_file),
                                     model_name=job.model_name, device=str(job.device),
                                     rum_steps=[vars(s) for s in rp.steps], rum_plan_source=rp.source,
                                     identity=identity, precision=configs.precision(args),
                                     augmentation=augment_record(job.data, bool(args.aug)), **job.key_info))
    job.wandb = wandb_run(args, f"{rp.tag}-seed{args.seed}")
    data_dev = job.data.to(job.device)
    steps = [Step(j, labels[j], s.method, groups[j], retains[j], info={"args": ns})
             for j, (s, ns) in enumerate(zip(rp.steps, rp.step_args))]
    model, results = run_meta(prepare_model(job.model, job.device), steps,
                              lambda m, step: run_step(job, data_dev, m, step),
                              after_step=lambda m, step, res: record_step(job, data_dev, fs, fs_sha, m, step, res))
    total = float(sum(r.seconds for r in results))
    salun = any(s.method == "RL" for s in rp.steps)
    hparams = {"steps": [r.info.get("hparams") for r in results], "methods": [s.method for s in rp.steps],
               "mask_ratio": rp.mask_ratio if salun else None, "mask_order": mask_order(args) if salun else None}
    rum_record = {**job.key_info, "groups": k, "order": "low -> high memorization", "shuffle": bool(args.shuffle),
                  "shuffle_seed": int(args.seed) if args.shuffle else None, "group_sizes": sizes,
                  "matches_mix_parts": matches_mix, "plan_source": rp.source, "steps": job.step_records}
    finish_run(args, model, data_dev, fs, run_dir, job.device,
               lambda ev: {**unlearn_metrics(args, method="RUM", tag=rp.tag, data=job.data,
                                             forget_set=job.fs_plan.name, forget_kind=job.fs_plan.kind, fs=fs,
                                             fs_file=fs_file, fs_sha=fs_sha, ev=ev, seconds=total,
                                             pretrained=job.model_file, model_name=job.model_name,
                                             hparams=hparams, device=job.device,
                                             start_recipe=configs.start_recipe(job.model_file)), "rum": rum_record},
               commit=lambda: commit_run_dir(run_dir, final))
    if job.wandb is not None:
        job.wandb.finish(json.loads((final / "metrics.json").read_text()))
    return 0


def run_step(job: RumJob, data_dev: ImageData, model: torch.nn.Module,
             step: Step) -> tuple[torch.nn.Module, float, dict[str, Any]]:
    """One step: its method on its group (SalUn: the saliency mask first, on the current model)."""
    args, device, ns = job.args, job.device, step.info["args"]
    mask, fraction, mask_seconds = None, None, 0.0
    if step.method == "RL":
        synchronize(device)
        t0 = time.perf_counter()
        grads = forget_gradients(model, data_dev, step.forget_ids, device, args.batch_size)
        mask = saliency_masks(grads, [job.plan.mask_ratio], mask_order(args))[job.plan.mask_ratio]
        params = dict(model.named_parameters())
        mask = {n: t.to(params[n].device) for n, t in mask.items()}
        synchronize(device)
        mask_seconds = time.perf_counter() - t0
        fraction = mask_fraction(mask)
    cfg = configs.unlearn_config(ns, mask)
    sdir = job.run_dir / f"step{step.index}_{step.method}"  # the step's directory: its log.jsonl now, the rest after
    sdir.mkdir(parents=True, exist_ok=True)
    cfg.on_epoch = EpochLog(sdir / "log.jsonl", mirror=job.wandb, prefix=f"step{step.index}/")
    torch.manual_seed(args.seed)
    task = UnlearnTask(model=model, data=data_dev, forget_ids=step.forget_ids, retain_ids=step.retain_ids,
                       device=device, seed=args.seed, generator=torch.Generator().manual_seed(args.seed))
    seconds = run_timed(step.method, task, cfg, device)
    hp = hparams_record(step.method, cfg, mask_file=None, mask_fraction=fraction, train_seed=configs.train_seed(ns))
    if step.method == "RL":
        hp.update(mask_file=None, mask="in-process", mask_ratio=job.plan.mask_ratio, mask_order=mask_order(args))
    return task.model, seconds + mask_seconds, {"method_seconds": seconds, "mask_seconds": mask_seconds,
                                                "mask_fraction": fraction, "hparams": hp}


def record_step(job: RumJob, data_dev: ImageData, fs: ForgetSet, fs_sha: str, model: torch.nn.Module, step: Step,
                res: Any) -> None:
    """Evaluate the model after ``step`` (its group as the forget set) into ``step<j>_<method>/``."""
    args = job.args
    sdir = job.run_dir / f"step{step.index}_{step.method}"
    sdir.mkdir(parents=True, exist_ok=True)
    sfs = ForgetSet(forget_ids=step.forget_ids, retain_ids=step.retain_ids,
                    manifest={**fs.manifest, "rum_step": step.index, "rum_group": step.label}, extras=fs.extras)
    ev = evaluate(model, data_dev, sfs, job.device, seed=args.seed)
    key = job.key_by_id[step.forget_ids]
    finite = key[np.isfinite(key)]
    rec = {"step": step.index, "group": step.label, "method": step.method,
           "forget_set": job.fs_plan.name, "forget_set_sha256": fs_sha, "group_ids_sha256": forget_ids_sha256(sfs),
           "num_forget": int(len(step.forget_ids)), "num_retain": int(len(step.retain_ids)),
           "key_min": float(finite.min()) if finite.size else None,
           "key_max": float(finite.max()) if finite.size else None,
           **ev.metrics, "seconds": res.seconds, "method_seconds": res.info.get("method_seconds", 0.0),
           "mask_seconds": res.info.get("mask_seconds", 0.0), "mask_fraction": res.info.get("mask_fraction"),
           "hparams": res.info.get("hparams"), "dataset": job.data.name, "arch": args.arch, "seed": int(args.seed),
           "rum_method_tag": job.plan.tag}
    if not args.no_save:
        save_model(sdir, model, arch=args.arch, num_classes=job.data.num_classes, dataset=job.data.name)
    write_outputs(sdir, ev.outputs)
    atomic_write_json(sdir / "step_metrics.json", rec)
    a = rec["accuracy"]
    print(f"step {step.index} ({step.label}, {len(step.forget_ids)} ids, retain {len(step.retain_ids)}): "
          f"{step.method}  group {pct(a['forget'])}  retain {pct(a['retain'])}  test {pct(a['test'])}  "
          f"{res.seconds:.1f}s -> {sdir}")
    job.step_records.append({k: rec[k] for k in ("step", "group", "method", "num_forget", "num_retain", "key_min",
                                                 "key_max", "seconds", "method_seconds", "mask_seconds",
                                                 "mask_fraction", "group_ids_sha256", "accuracy")}
                            | {"run_dir": sdir.name})
