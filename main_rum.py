"""RUM: refine the forget set by memorization, then unlearn it group by group (rum-spec §1).

    python main_rum.py --unlearn {METHOD} --mem mix --num_indexes_to_replace 3000 \
        --dataset {DATASET} --arch {ARCHITECTURE} --epochs {ORIGINAL_MODEL_EPOCHS} --lr 0.1 --batch_size 256
    python main_rum.py --mem mix --num_indexes_to_replace 3000 ...            # the default plan
    python main_rum.py --rum_methods none,FT,RL --rum_lr 0,0.1,0.1 --rum_epochs 0,10,5 ...
    python main_rum.py --unlearn NG --shuffle ...                            # the shuffle baseline

1. **Forget set**: exactly the one ``main_forget.py`` builds from the same flags (shared builder,
   ``<ckpts>/forget_sets/<name>.npz``; ``--mem mix`` in the README), so the final run pairs with
   ``main_forget.py --unlearn retrain`` of the same forget set and seed. ``--shuffle`` does not
   touch the forget set here; it shuffles the groups.
2. **Refinement** (``unlearn/rum.py``): the forget set sorted by its true memorization scores (the
   score file the builder uses: ``--mem_file``, else the published or computed file) is cut into
   ``--rum_groups`` K (default 3) groups, processed low -> high memorization; for K = 3 and the mix
   set they are exactly its low, mid and high parts. ``--shuffle``: random groups of the same sizes
   (``RandomState(--seed)``).
3. **Meta step**: one method per group, in sequence, each step starting from the previous step's
   model; step j's retain set is every training example minus groups 0..j.
   Methods: ``--rum_methods m0,m1,...`` (K names from FT, FT_l1, FT_prune, GA, NG, SCRUB, wfisher, RL,
   RL_og, none), else ``--unlearn M`` (M on every group), else the default plan
   none / FT (10 epochs, lr 0.1) / RL = SalUn (5 epochs, lr 0.1) (``--unlearn RUM`` = the default
   plan too). Per step: ``--rum_lr``, ``--rum_epochs``, ``--rum_alpha`` (K values each) win, then
   ``--unlearn_lr`` / ``--unlearn_epochs`` / ``--alpha`` when given on the command line, then the
   default plan's values, then those flags' defaults (0.01, 10, 0.99). SalUn steps compute their
   saliency mask in-process on the step's group with the current model (``--mask_ratio``: its
   first value, default 0.5; ``--mask_order``). SCRUB and the other methods take main_forget.py's
   defaults and flags.
4. **Output**: ``<ckpts>/unlearn/<forget set>/<model>/<RUM tag>/seed<seed>/`` evaluated exactly like
   main_forget.py's runs (metrics.json with method "RUM"), plus ``step<j>_<method>/`` inside it per
   step (``step_metrics.json``: the group as forget set, the step's retain set).

See docs/stage_rum.md.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from utils.cli import run_main
from utils.errors import UserError

DEFAULT_PROXY = "confidence"


# --------------------------------------------------------------------------------------------
# Flags -> plan (no file is read)
# --------------------------------------------------------------------------------------------

def _explicit(argv: Sequence[str] | None, prog: str) -> set[str]:
    """Which of --unlearn_lr / --unlearn_epochs / --alpha were given on the command line."""
    from arg_parser import build_parser

    p = build_parser(prog)
    watched = ("unlearn_lr", "unlearn_epochs", "alpha")
    p.set_defaults(**{k: None for k in watched})
    ns, _ = p.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    return {k for k in watched if getattr(ns, k) is not None}


def _canon_method(name: str, flag: str) -> str:
    from unlearn.rum import NONE, STEP_METHODS

    by_lower = {m.lower(): m for m in STEP_METHODS + (NONE,)}
    m = by_lower.get(str(name).strip().lower())
    if m is None:
        raise UserError(f"{flag} {name!r}: not a method a RUM step can run; accepted: "
                        f"{', '.join(STEP_METHODS + (NONE,))}")
    return m


class RumPlan(argparse.Namespace):
    """The validated RUM flags: ``k``, ``steps`` (StepHparams), ``step_args`` (one Namespace per
    step, as main_forget.py would see it), ``tag``, ``grouping``, ``proxy``, ``mask_ratio``."""


def plan_rum(args: argparse.Namespace, argv: Sequence[str] | None, prog: str, grouping: str) -> RumPlan:
    from arg_parser import build_parser
    from unlearn.rum import DEFAULT_MASK_RATIO, DEFAULT_PLANS, NONE, resolve_steps, rum_tag
    from unlearn.run import check_method, optimizer_tag_parts
    from memorization.proxies import PROXY_SIGN
    from unlearn.saliency import check_ratio

    for flag, bad in (("--es", args.es), ("--resume", args.resume)):
        if bad:
            raise UserError(f"{flag}: does not apply to {prog} (use main_forget.py)")
    if args.path:
        raise UserError(f"--path {args.path}: {prog} computes each SalUn step's saliency mask in-process on that "
                        f"step's group (ratio --mask_ratio, order --mask_order); a mask file is not used")
    if args.separate:
        raise UserError(f"--separate {' '.join(args.separate)}: Sharp MinMax needs a mask file and is not a RUM "
                        f"step; use main_forget.py")
    proxy = None
    if grouping == "mem":
        if args.mem_proxy is not None:
            raise UserError(f"--mem_proxy {args.mem_proxy}: main_rum.py groups by true memorization scores; "
                            f"use main_rum_proxy.py --mem_proxy {args.mem_proxy} to group by a proxy")
    else:
        proxy = str(args.mem_proxy) if args.mem_proxy is not None else DEFAULT_PROXY
        if proxy not in PROXY_SIGN:
            raise UserError(f"--mem_proxy {proxy!r}: unknown proxy; accepted: {', '.join(PROXY_SIGN)}")
    k = int(args.rum_groups)
    if k < 1:
        raise UserError(f"--rum_groups {k}: must be an integer >= 1")
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
    for flag, values, low in (("--rum_lr", args.rum_lr, 0.0), ("--rum_epochs", args.rum_epochs, 0),
                              ("--rum_alpha", args.rum_alpha, None)):
        if values is None:
            continue
        if len(values) != k:
            raise UserError(f"{flag} {','.join(f'{v:g}' for v in values)}: {len(values)} values, expected {k} "
                            f"(one per group, low -> high memorization; --rum_groups {k})")
        if low is not None and any(v < low for v in values):
            raise UserError(f"{flag} {','.join(f'{v:g}' for v in values)}: values must be >= {low}")
    explicit = _explicit(argv, prog)
    defaults = build_parser(prog).parse_args([])
    steps, source = resolve_steps(
        k, methods=methods, unlearn=unlearn, default=default, rum_lr=args.rum_lr, rum_epochs=args.rum_epochs,
        rum_alpha=args.rum_alpha, lr=args.unlearn_lr if "unlearn_lr" in explicit else None,
        epochs=args.unlearn_epochs if "unlearn_epochs" in explicit else None,
        alpha=args.alpha if "alpha" in explicit else None,
        flag_defaults=(defaults.unlearn_lr, defaults.unlearn_epochs, defaults.alpha))
    if args.unlearn not in (None, "RUM") and methods is not None:
        print(f"note: --rum_methods {','.join(methods)} given; --unlearn {args.unlearn} is not used")
    step_args = []
    for j, s in enumerate(steps):
        if s.method == "NG" and not 0.0 <= s.alpha <= 1.0:
            raise UserError(f"--rum_alpha: step {j} (NG) has alpha {s.alpha:g}; NG's retain weight must be in [0, 1]")
        ns = argparse.Namespace(**{**vars(args), "unlearn": None if s.method == NONE else s.method,
                                   "unlearn_lr": s.lr, "unlearn_epochs": s.epochs, "alpha": s.alpha, "path": None})
        if s.method != NONE:
            check_method(ns, None, mask_in_process=True)
        step_args.append(ns)
    ratio = check_ratio(args.mask_ratio[0]) if args.mask_ratio else DEFAULT_MASK_RATIO
    if args.mask_ratio and len(args.mask_ratio) > 1 and any(s.method == "RL" for s in steps):
        print(f"note: --mask_ratio {','.join(f'{q:g}' for q in args.mask_ratio)}: SalUn steps use the first, {ratio:g}")
    common = optimizer_tag_parts(args)
    scrub = None
    for s, ns in zip(steps, step_args):
        if s.method == "SCRUB":
            scrub = f"msteps{ns.msteps}_kdT{ns.kd_T:g}_beta{ns.beta:g}_gamma{ns.gamma:g}"
    tag = rum_tag(steps, grouping="mem" if grouping == "mem" else f"proxy-{proxy}", shuffle=bool(args.shuffle),
                  common=common, mask_ratio=ratio, mask_order=args.mask_order, scrub=scrub)
    return RumPlan(k=k, steps=steps, step_args=step_args, source=source, tag=tag, grouping=grouping, proxy=proxy,
                   mask_ratio=ratio)


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------

def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def run_rum(args: argparse.Namespace, prog: str, grouping: str, argv: Sequence[str] | None = None) -> int:
    """Validate everything, then build/reuse the forget set, refine, run the steps, evaluate and
    write the run directories; returns the exit status."""
    from trainer.device import prepare_model
    from unlearn.base import UnlearnTask
    from unlearn.rum import (Step, group_labels, memorization_key, refine, run_meta, shuffled_groups,
                             step_retain_sets)
    from unlearn.run import (_build_model, _device, _pct, hparams_of, make_config, model_name_of, run_timed,
                             summary_line, unlearn_metrics)
    from utils.rundir import (check_writable, is_complete, prepare_run_dir, run_config, save_model, write_config,
                                 write_metrics, write_outputs)
    from utils.data import load_data
    from evaluation.evaluate import evaluate
    from forget_sets.builder import (forget_ids_sha256, memorization_scores, obtain, plan_forget_set,
                                      proxy_file_for)
    from memorization.proxies import PROXY_SIGN
    from forget_sets.file import ForgetSet, sha256_file
    from forget_sets.select import memorization_groups
    from utils.io import atomic_write_json
    from utils.pretrained import load_into, resolve_model_file
    from unlearn.saliency import forget_gradients, mask_fraction, saliency_masks
    from memorization.scores import load_proxy

    # ---- 1. validation: nothing is written before this block ends ----------------------------
    rp = plan_rum(args, argv, prog, grouping)
    k = rp.k
    device = _device(args)
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    model = _build_model(args, data)
    model_file = resolve_model_file(args.mask, args)
    load_into(model, model_file, arch=args.arch, num_classes=data.num_classes)
    # the forget set main_forget.py builds from the same flags; --shuffle and --mem_proxy are RUM's here
    fs_args = argparse.Namespace(**{**vars(args), "mem_proxy": None, "shuffle": False})
    plan = plan_forget_set(fs_args, data, model_file=model_file)
    n_planned = plan.manifest.get("n")
    if n_planned is not None and int(n_planned) < k:
        raise UserError(f"--rum_groups {k}: more groups than the {n_planned} examples of the forget set")
    key_by_id = np.full(int(np.max(data.train_ids)) + 1, np.nan)  # indexed by global id
    if grouping == "mem":
        key_file, scores = memorization_scores(args, data)
        key_by_id[data.train_ids] = scores[data.train_ids]
        key_info = {"grouping": "memorization", "proxy": None, "proxy_negative": None, "score_file": str(key_file)}
    else:
        key_file = proxy_file_for(args, rp.proxy, model_file)
        values = load_proxy(key_file, rp.proxy, data.train_ids)
        key_by_id[data.train_ids] = memorization_key(values, negative=PROXY_SIGN[rp.proxy])
        key_info = {"grouping": "proxy", "proxy": rp.proxy, "proxy_negative": PROXY_SIGN[rp.proxy],
                    "proxy_file": str(key_file)}
    key_info["key_sha256"] = sha256_file(key_file)
    model_name = model_name_of(model_file)
    run_dir = Path(args.ckpts) / "unlearn" / plan.name / model_name / rp.tag / f"seed{args.seed}"
    if is_complete(run_dir) and not args.overwrite:
        raise UserError(f"{run_dir} already holds a finished run; pass --overwrite to replace it")
    check_writable(run_dir, "--ckpts")

    # ---- 2. forget set and refinement ----------------------------------------------------------
    fs = obtain(plan, fs_args, data, device=device)
    forget_ids = np.asarray(fs.forget_ids, np.int64)
    if len(forget_ids) < k:
        raise UserError(f"--rum_groups {k}: more groups than the {len(forget_ids)} examples of the forget set")
    key = key_by_id[forget_ids]
    groups = refine(forget_ids, key, k)
    sizes = [len(g) for g in groups]
    if args.shuffle:
        groups = shuffled_groups(forget_ids, sizes, int(args.seed))
    labels = group_labels(k, bool(args.shuffle))
    retains = step_retain_sets(fs.retain_ids, groups)
    matches_mix = None
    m = fs.manifest
    if grouping == "mem" and k == 3 and not args.shuffle and m.get("kind") == "mem" and m.get("level") == "mix":
        n = int(m["n"])
        g = memorization_groups(data.train_ids, scores[data.train_ids], n)
        parts = [np.asarray(g["low"])[(-n) // 3:], np.asarray(g["mid"])[: n // 3], np.asarray(g["high"])[: n // 3]]
        matches_mix = all(set(a.tolist()) == set(b.tolist()) for a, b in zip(parts, groups))
        if not matches_mix:
            print("note: the score-sorted groups differ from the mix set's low/mid/high parts (their score ranges "
                  "overlap); the groups are the score terciles of the forget set")
    print(f"RUM on {plan.name}: {k} groups by "
          + ("random shuffle" if args.shuffle else "memorization" if grouping == "mem" else f"proxy {rp.proxy}")
          + f", processed {' -> '.join(f'{lab} ({len(gr)})' for lab, gr in zip(labels, groups))}: "
          + ", ".join(f"{s.method}" for s in rp.steps))

    # ---- 3. run directory -----------------------------------------------------------------------
    run_dir = prepare_run_dir(run_dir, overwrite=args.overwrite)
    for stale in run_dir.glob("step*"):  # an unfinished earlier attempt of the same run
        if stale.is_dir():
            shutil.rmtree(stale)
    fs_file = Path(plan.path)
    fs_sha = sha256_file(fs_file)
    write_config(run_dir, run_config(args, stage="unlearn", prog=prog, method="RUM", method_tag=rp.tag,
                                     forget_set=plan.name, forget_set_file=str(fs_file), forget_set_sha256=fs_sha,
                                     pretrained=str(model_file), model_name=model_name, device=str(device),
                                     rum_steps=[vars(s) for s in rp.steps], rum_plan_source=rp.source, **key_info))
    model = prepare_model(model, device)
    data_dev = data.to(device)
    steps = [Step(j, labels[j], s.method, groups[j], retains[j], info={"args": ns})
             for j, (s, ns) in enumerate(zip(rp.steps, rp.step_args))]

    # ---- 4. the steps ---------------------------------------------------------------------------
    def execute(model: torch.nn.Module, step: Step) -> tuple[torch.nn.Module, float, dict[str, Any]]:
        ns = step.info["args"]
        mask, fraction, mask_seconds = None, None, 0.0
        if step.method == "RL":
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            grads = forget_gradients(model, data_dev, step.forget_ids, device, args.batch_size)
            mask = saliency_masks(grads, [rp.mask_ratio], args.mask_order)[rp.mask_ratio]
            params = dict(model.named_parameters())
            mask = {n: t.to(params[n].device) for n, t in mask.items()}
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            mask_seconds = time.perf_counter() - t0
            fraction = mask_fraction(mask)
        cfg = make_config(ns, mask)
        torch.manual_seed(args.seed)
        gen = torch.Generator().manual_seed(args.seed)
        task = UnlearnTask(model=model, data=data_dev, forget_ids=step.forget_ids, retain_ids=step.retain_ids,
                           device=device, seed=args.seed, generator=gen)
        seconds = run_timed(ns, task, cfg, device)
        hp = hparams_of(ns, cfg, fraction)
        if step.method == "RL":
            hp.update(mask_file=None, mask="in-process", mask_ratio=rp.mask_ratio, mask_order=args.mask_order)
        return task.model, seconds + mask_seconds, {"method_seconds": seconds, "mask_seconds": mask_seconds,
                                                    "mask_fraction": fraction, "hparams": hp}

    step_records: list[dict[str, Any]] = []

    def after_step(model: torch.nn.Module, step: Step, res) -> None:
        sdir = run_dir / f"step{step.index}_{step.method}"
        sdir.mkdir(parents=True, exist_ok=True)
        sfs = ForgetSet(forget_ids=step.forget_ids, retain_ids=step.retain_ids,
                        manifest={**fs.manifest, "rum_step": step.index, "rum_group": step.label}, extras=fs.extras)
        ev = evaluate(model, data_dev, sfs, device, seed=args.seed)
        gkey = key_by_id[step.forget_ids]
        fin = gkey[np.isfinite(gkey)]
        rec = {"step": step.index, "group": step.label, "method": step.method,
               "forget_set": plan.name, "forget_set_sha256": fs_sha, "group_ids_sha256": forget_ids_sha256(sfs),
               "num_forget": int(len(step.forget_ids)), "num_retain": int(len(step.retain_ids)),
               "key_min": float(fin.min()) if fin.size else None, "key_max": float(fin.max()) if fin.size else None,
               **ev.metrics, "seconds": res.seconds, "method_seconds": res.info.get("method_seconds", 0.0),
               "mask_seconds": res.info.get("mask_seconds", 0.0), "mask_fraction": res.info.get("mask_fraction"),
               "hparams": res.info.get("hparams"), "dataset": data.name, "arch": args.arch, "seed": int(args.seed),
               "rum_method_tag": rp.tag}
        if not args.no_save:
            save_model(sdir, model, arch=args.arch, num_classes=data.num_classes, dataset=data.name)
        write_outputs(sdir, ev.outputs)
        atomic_write_json(sdir / "step_metrics.json", rec)
        a = rec["accuracy"]
        print(f"step {step.index} ({step.label}, {len(step.forget_ids)} ids, retain {len(step.retain_ids)}): "
              f"{step.method}  group {_pct(a['forget'])}  retain {_pct(a['retain'])}  test {_pct(a['test'])}  "
              f"{res.seconds:.1f}s -> {sdir}")
        step_records.append({k: rec[k] for k in ("step", "group", "method", "num_forget", "num_retain", "key_min",
                                                 "key_max", "seconds", "method_seconds", "mask_seconds",
                                                 "mask_fraction", "group_ids_sha256", "accuracy")}
                            | {"run_dir": sdir.name})

    model, results = run_meta(model, steps, execute, after_step=after_step)
    total = float(sum(r.seconds for r in results))

    # ---- 5. final evaluation, exactly as every other method ---------------------------------------
    ev = evaluate(model, data_dev, fs, device, seed=args.seed)
    hparams = {"steps": [r.info.get("hparams") for r in results], "methods": [s.method for s in rp.steps],
               "mask_ratio": rp.mask_ratio if any(s.method == "RL" for s in rp.steps) else None,
               "mask_order": args.mask_order if any(s.method == "RL" for s in rp.steps) else None}
    metrics = unlearn_metrics(args, method="RUM", tag=rp.tag, data=data, forget_set=plan.name, forget_kind=plan.kind,
                              fs=fs, fs_file=fs_file, fs_sha=fs_sha, ev=ev, seconds=total, pretrained=model_file,
                              model_name=model_name, hparams=hparams, device=device)
    metrics["rum"] = {**key_info, "groups": k, "order": "low -> high memorization", "shuffle": bool(args.shuffle),
                      "shuffle_seed": int(args.seed) if args.shuffle else None, "group_sizes": sizes,
                      "matches_mix_parts": matches_mix, "plan_source": rp.source, "steps": step_records}
    if not args.no_save:
        save_model(run_dir, model, arch=args.arch, num_classes=data.num_classes, dataset=data.name)
    write_outputs(run_dir, ev.outputs)
    write_metrics(run_dir, metrics)
    print(summary_line(metrics, run_dir))
    if metrics["collapsed"]:
        print(f"warning: the model collapsed (retain accuracy {_pct(metrics['accuracy']['retain'])} is at chance "
              f"level); its ToW is not meaningful. Flagged in metrics.json.")
    return 0


HELP = {
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
    " Methods: --rum_methods m0,...,m(K-1) (FT, FT_l1, FT_prune, GA, NG, SCRUB, wfisher, RL, RL_og, none = skip), "
    "else --unlearn M = M on every group, else the default plan. Per step: --rum_lr / --rum_epochs / --rum_alpha "
    "(K values) win, then --unlearn_lr / --unlearn_epochs / --alpha when given, then the default plan's values, "
    "then those flags' defaults. SalUn steps compute their saliency mask in-process on the step's group "
    "(first --mask_ratio, default 0.5; --mask_order). --shuffle: random groups of the same sizes "
    "(RandomState(--seed)); the forget set itself is unchanged. The forget set is the one main_forget.py builds "
    "from the same flags (--mem mix in the README); the final run directory "
    "<ckpts>/unlearn/<forget set>/<model>/<RUM tag>/seed<seed>/ pairs with main_forget.py --unlearn retrain of "
    "that forget set and seed; step<j>_<method>/ inside it holds each step's step_metrics.json. "
    "See docs/stage_rum.md.")


def parse_rum_args(argv: list[str] | None, prog: str, grouping: str) -> argparse.Namespace:
    """The shared parser with RUM's description; exit status 2 and one line on bad input."""
    from arg_parser import parse_args

    return parse_args(argv, prog, description=HELP[grouping], epilog=EPILOG[grouping] + COMMON_EPILOG)


def rum_main(prog: str, grouping: str, argv: list[str] | None = None) -> int:
    """Entry point of main_rum.py (``grouping`` "mem") and main_rum_proxy.py ("proxy")."""
    from unlearn.run import Diverged

    args = parse_rum_args(argv, prog, grouping)
    try:
        return run_rum(args, prog, grouping, argv)
    except Diverged as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 1


def main(argv: list[str] | None = None) -> int:
    return rum_main("main_rum.py", "mem", argv)


if __name__ == "__main__":
    run_main(main)
