"""``analysis_audit.py``: LiRA, KLOM and the relearning attack over unlearning runs
(docs/stage_audit.md; the audits are :mod:`evaluation.audits`).

Runs are found and filtered as ``analysis.py`` finds them (``--runs``, ``--unlearn``, ``--mem``,
``--num_indexes_to_replace``, ...; ``--dataset``/``--arch`` only when given). ``--audit`` picks
the audits (default all three). LiRA needs shadow models of each audited recipe under
``<ckpts>/audit/``: without them it stops with one line naming the command that trains them
(``--train_shadows``). Tables go to ``--out`` (default ``<ckpts>/analysis``) as ``audit.md``,
``audit.json`` and ``audit_examples.npz`` (LiRA's per-example p-values and likelihood ratios).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from arg_parser import given_flags, parse_args
from evaluation.audits.klom import FITS, HIST_BINS
from evaluation.audits.levels import example_levels
from evaluation.audits.lira import binomial_range, mean_range, shadow_rejection_rates
from evaluation.audits.relearn import RelearnConfig, relearn
from evaluation.audits.report import Record, Target, aggregate, render_markdown, report_json
from evaluation.audits.runner import klom_group, lira_run, load_outputs
from evaluation.audits.shadows import (DEFAULT_POOL, POOLS, describe_recipe, find_shadows, load_shadows, new_shadow_set,
                                       recipe_from_key, save_shadows, shadow_pool, train_shadows)
from forget_sets.file import load_forget_set
from forget_sets.select import memorization_groups
from memorization.scores import load_scores, score_key
from models import build_for, load_into
from results.runs import Filters, Run
from results.table import recipe_rows, row_info
from stages.analysis import discover_runs, filters_from_args, select_runs
from stages.configs import device as device_of
from utils import paths
from utils.data import ImageData, load_data
from utils.errors import UserError
from utils.io import atomic_save_npz, atomic_write_bytes, atomic_write_json

PROG = "analysis_audit.py"
AUDITS = ("lira", "klom", "relearn")
MIN_OUT = 2  # OUT shadows an example needs (a mean and a deviation)
FILTERING_DEFAULTS = ("dataset", "arch")  # flags that filter only when given (as analysis.py)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv, prog=PROG)
    return run(args, given=given_flags(argv, FILTERING_DEFAULTS, PROG))


def check_args(args: argparse.Namespace) -> tuple[str, ...]:
    audits = tuple(args.audit or AUDITS)
    bad = [a for a in audits if a not in AUDITS]
    if bad:
        raise UserError(f"--audit {','.join(args.audit)}: unknown audit {bad[0]!r}; accepted: {', '.join(AUDITS)}")
    if args.shadow_pool not in POOLS or args.klom_fit not in FITS:
        raise UserError(f"--shadow_pool {args.shadow_pool} / --klom_fit {args.klom_fit}: not accepted")
    return audits


@dataclass
class Audit:
    """What every audit of one invocation shares."""

    args: argparse.Namespace
    filters: Filters
    data: ImageData
    device: torch.device
    runs: list[Run]
    targets: dict[Path, Target]
    forget_sets: dict[str, Any]  # run dir -> (set level, {id: level})
    records: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    examples: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    controls: dict[tuple[str, str], tuple[Any, np.ndarray]] = field(default_factory=dict)  # retrain -> shadows, F

    @property
    def audit_dir(self) -> Path:
        return paths.audit_dir(self.args.ckpts)


def run(args: argparse.Namespace, *, given: Iterable[str] = ()) -> int:
    audits = check_args(args)
    root = Path(args.runs) if args.runs else paths.unlearn_root(args.ckpts)
    out_dir = Path(args.out) if args.out else paths.analysis_dir(args.ckpts)
    filters = filters_from_args(args, given)
    selected = select_runs(discover_runs(root, PROG)[0], filters, root)
    splits = sorted({int(_key(r).get("split_seed", args.split_seed)) for r in selected if _key(r) is not None})
    if len(splits) > 1:
        raise UserError(f"the selected runs come from models trained on different train/val splits (--split_seed "
                        f"{', '.join(map(str, splits))}); audit them separately (e.g. with --runs)")
    split_seed = splits[0] if splits else args.split_seed
    data = load_data(selected[0].dataset, args.data, split_seed=split_seed, download=args.download)
    labels = method_labels(selected)
    targets = {r.path: Target(str(r.path), r.method, r.method_tag, r.seed, r.column, r.pretrained or "unknown",
                              r.is_retrain, labels[r.path]) for r in selected}
    a = Audit(args, filters, data, device_of(args), selected, targets, {})
    for r in selected:
        a.forget_sets[str(r.path)] = _levels(a, r)
    for name, fn in (("lira", audit_lira), ("klom", audit_klom), ("relearn", audit_relearn)):
        if name in audits:
            t0 = time.perf_counter()
            fn(a)
            a.seconds[name] = time.perf_counter() - t0
    return _finish(a, audits, out_dir)


def method_labels(runs: Sequence[Run]) -> dict[Path, str]:
    """Each run's row label as analysis.py's tables print it (the paper name plus the
    hyperparameters that tell a method's rows apart, :func:`results.table.row_info`); the
    retrain is ``Retrain``."""
    rows, pretrained, _ = recipe_rows(runs)
    info, _ = row_info([r for r in rows if not r.is_retrain], pretrained)
    return {r.path: "Retrain" if r.is_retrain else info[r.row or r.method_tag].label for r in rows}


def _key(r: Run) -> dict | None:
    """The start model's pretraining recipe key (None: a model this toolkit did not pretrain)."""
    if r.recipe is None:
        return None
    k = json.loads(r.recipe)
    return None if "model" in k and len(k) == 1 else k


def _metrics(r: Run) -> dict:
    try:
        return json.loads((r.path / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def _levels(a: Audit, r: Run) -> tuple[str, dict[int, str]]:
    """The set's level (its --mem level, else ``all``) and, for a mix, every forget id's level."""
    set_level = r.mem_level or "all"
    if set_level != "mix":
        return set_level, {}
    m = _metrics(r)
    path = Path(m.get("forget_set_file") or paths.forget_set_path(a.args.ckpts, r.forget_set))
    try:
        fs = load_forget_set(path)
    except UserError:
        a.notes.append(f"{r.column}: forget-set file {path} not found; no breakdown by memorization level")
        return set_level, {}
    man = fs.manifest
    score = next((d / str(man.get("score_file")) for d in paths.score_search_dirs(a.args.ckpts)
                  if man.get("score_file") and (d / str(man["score_file"])).is_file()), None)
    if man.get("kind") != "mem" or man.get("shuffle") or score is None:
        return set_level, {}
    scores = load_scores(score, score_key(a.data.name, score), len(a.data.x))
    groups = memorization_groups(a.data.train_ids, scores[a.data.train_ids], int(man["n"]))
    labels = example_levels(fs.forget_ids, "mem", "mix", groups, int(man["n"]))
    return set_level, {int(i): str(lv) for i, lv in zip(fs.forget_ids, labels)}


# --------------------------------------------------------------------------------------------
# LiRA
# --------------------------------------------------------------------------------------------

def _shadow_command(a: Audit, k: int) -> str:
    args = a.args
    flags = [f"--ckpts {args.ckpts}"] + ([f"--runs {args.runs}"] if args.runs else []) + \
        ([f"--data {args.data}"] if args.data != "datasets" else []) + ([a.filters.flags()] if a.filters.flags() else [])
    pool = [] if args.shadow_pool == DEFAULT_POOL else [f"--shadow_pool {args.shadow_pool}"]
    return " ".join([f"python {PROG} --audit lira --train_shadows --num_shadows {k}"] + pool + flags)


def shadows_for(a: Audit, key: dict, pool_ids: np.ndarray):
    """The shadow set of the recipe ``key`` and pool ``pool_ids``: stored under
    ``<ckpts>/audit``, else trained (``--train_shadows``), else a one-line refusal naming the
    command that trains it."""
    args = a.args
    path, found, reasons = find_shadows(a.audit_dir, key, args.shadow_pool, pool_ids, MIN_OUT)
    have = 0 if found is None else len(found.seeds)
    if found is not None and (have >= args.num_shadows or not args.train_shadows):
        if have < args.num_shadows:
            a.notes.append(f"LiRA uses the {have} stored shadow models of {describe_recipe(key)} (asked "
                           f"--num_shadows {args.num_shadows}; --train_shadows trains the rest)")
        return found
    if not args.train_shadows:
        why = f" ({reasons[0]})" if reasons else ""
        raise UserError(f"LiRA: no shadow models matching the recipe of the audited runs ({describe_recipe(key)}) "
                        f"and their forget set at {path}{why}; train them with: "
                        f"{_shadow_command(a, args.num_shadows)}")
    try:
        recipe_from_key(key)
    except ValueError as e:
        raise UserError(f"LiRA: cannot train shadows for these runs: {e}") from None
    old = load_shadows(path) if path.is_file() else None
    s = new_shadow_set(key, args.shadow_pool, pool_ids, a.data.train_ids, len(a.data.x), len(a.data.test_y),
                       max(args.num_shadows, 0 if old is None else len(old.seeds)), seed=0, old=old)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_shadows(path, s)
    print(f"{PROG}: training {int((~s.done).sum())} shadow models of {describe_recipe(key)} -> {path}")
    train_shadows(s, path, a.data, a.data.to(a.device), a.device, imagenet_arch=bool(key.get("imagenet_arch")))
    return s.finished()


def _retrain_mismatch(r: Run, key: dict) -> list[str]:
    """How a retrain run's own training recipe differs from the shadows' (its config.json)."""
    try:
        ra = json.loads((r.path / "config.json").read_text()).get("args", {})
    except (OSError, ValueError, AttributeError):
        return []
    pairs = (("epochs", ra.get("unlearn_epochs")), ("lr", ra.get("unlearn_lr")), ("batch_size", ra.get("batch_size")),
             ("momentum", ra.get("momentum")), ("weight_decay", ra.get("weight_decay")), ("warmup", ra.get("warmup")),
             ("augment", None if ra.get("no_aug") is None else not ra.get("no_aug")))
    return [f"{k} {v} vs {key.get(k)}" for k, v in pairs if v is not None and key.get(k) is not None
            and float(v) != float(key[k])]


def audit_lira(a: Audit) -> None:
    groups: dict[tuple[str, bytes], list[Run]] = {}
    outs: dict[Path, dict] = {}
    for r in a.runs:
        k = _key(r)
        if k is None:
            a.notes.append(f"LiRA skips {r.path}: its start model was not pretrained by this toolkit (no recipe)")
            continue
        outs[r.path] = load_outputs(r.path)
        pool = shadow_pool(a.args.shadow_pool, outs[r.path]["forget"][0], a.data.train_ids)
        groups.setdefault((json.dumps(k, sort_keys=True), pool.tobytes()), []).append(r)
    for (key_text, pool_bytes), runs in groups.items():
        key = json.loads(key_text)
        s = shadows_for(a, key, np.frombuffer(pool_bytes, dtype=np.int64))
        for r in runs:
            _lira_one(a, r, key, outs[r.path], s)
            if r.is_retrain:
                a.controls[(r.method_tag, r.column)] = (s, np.asarray(outs[r.path]["forget"][0], np.int64))
        a.notes.append(f"LiRA shadows of {describe_recipe(key)} for {runs[0].column}: {len(s.seeds)} models (pool "
                       f"{s.manifest.get('pool')}, {s.manifest.get('pool_size')} ids, "
                       f"{'all' if s.manifest.get('pool') == 'retrain' else 'half'} left out by each), "
                       f"mean test accuracy {100 * float(np.nanmean(s.test_acc)):.2f}%")
    _calibration_notes(a)


def _lira_one(a: Audit, r: Run, key: dict, out: dict, s) -> None:
    set_level, labels = a.forget_sets[str(r.path)]
    recs, ex = lira_run(a.targets[r.path], out, s, labels, set_level, level=a.args.audit_level,
                        test=a.args.lira_test)
    a.records.extend(recs)
    i = sum(k.endswith("_run") for k in a.examples)
    a.examples.update({f"{i}_{k}": np.asarray(v, np.int64 if k == "ids" else np.float64) for k, v in ex.items()})
    a.examples[f"{i}_run"] = np.array(str(r.path))
    missing = int(np.isnan(ex["p"]).sum())
    if missing:
        a.notes.append(f"LiRA: {missing} of the {len(ex['p'])} forget examples of {r.method_tag} (seed {r.seed}) have "
                       f"fewer than {MIN_OUT} OUT shadows and are left out (more --num_shadows)")
    if r.is_retrain:
        diff = _retrain_mismatch(r, key)
        if diff:
            a.notes.append(f"the retrain {r.method_tag} (seed {r.seed}) trained with another recipe than the "
                           f"shadows ({'; '.join(diff)}): it is no calibrated control")


def _calibration_notes(a: Audit) -> None:
    """Per retrain tag and forget set: its rejection rate pooled over seeds, against

    * the 95% binomial range of a calibrated test over that many independent examples (the
      issue's check; it ignores that one model's examples reject together, so it is too narrow),
    * the leave-one-out range: each shadow in turn tested on the forget examples it left out
      against the other shadows (:func:`evaluation.audits.lira.shadow_rejection_rates`), and the
      central 95% of the mean of as many such models as the retrain has seeds
      (:func:`~evaluation.audits.lira.mean_range`): what a retrain trained like the shadows shows."""
    pooled: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
    for rec in a.records:
        if rec.audit == "lira" and rec.target.is_retrain and rec.level == a.forget_sets[rec.target.path][0]:
            n = int(rec.values["n"])
            pooled.setdefault((rec.target.tag, rec.target.column), []).append((rec.values["reject"] * n, n,
                                                                               rec.target.seed))
    level = a.args.audit_level
    for (tag, col), vals in pooled.items():
        n = sum(v[1] for v in vals)
        rej = sum(v[0] for v in vals) / max(n, 1)
        lo, hi = binomial_range(n, level)
        verdict = "within" if lo <= rej <= hi else "OUTSIDE"
        line = (f"calibration: the retrain {tag} on {col} rejects {100 * rej:.1f}% of its forget examples as never "
                f"seen (seeds {','.join(str(v[2]) for v in vals)}, {n} example-runs); a calibrated test rejects "
                f"{100 * level:g}%: {verdict} the 95% binomial range [{100 * lo:.1f}%, {100 * hi:.1f}%]")
        if (tag, col) in a.controls:
            s, forget = a.controls[(tag, col)]
            rates = shadow_rejection_rates(s.phi[:, forget], s.in_mask[:, forget], level=level,
                                           test=a.args.lira_test, min_out=MIN_OUT)
            lo2, hi2 = mean_range(rates, len(vals))
            if np.isfinite(lo2):
                verdict2 = "within" if lo2 - 1e-12 <= rej <= hi2 + 1e-12 else "OUTSIDE"
                line += (f"; shadows tested leave-one-out reject {100 * float(np.nanmean(rates)):.1f}% of theirs, "
                         f"and the mean of {len(vals)} such models lies in [{100 * lo2:.1f}%, {100 * hi2:.1f}%] "
                         f"95% of the time ({int(np.isfinite(rates).sum())} shadows): {verdict2}")
        a.notes.append(line)


# --------------------------------------------------------------------------------------------
# KLOM and relearning
# --------------------------------------------------------------------------------------------

def _pair_key(r: Run) -> tuple:
    return (r.sha or r.forget_set, r.recipe)


def audit_klom(a: Audit) -> None:
    groups: dict[tuple, list[Run]] = {}
    for r in a.runs:
        groups.setdefault(_pair_key(r), []).append(r)
    need = 2 if a.args.klom_fit == "gauss" else 1
    for runs in groups.values():
        retrains: dict[str, list[Run]] = {}
        for r in runs:
            if r.is_retrain and (a.args.retrain is None or r.method_tag == a.args.retrain):
                retrains.setdefault(r.method_tag, []).append(r)
        col = runs[0].column
        if len(retrains) != 1:
            a.notes.append(f"KLOM skips {col}: " + ("no retrain runs" if not retrains else
                                                    f"several retrain tags ({', '.join(sorted(retrains))}); "
                                                    f"choose one with --retrain TAG"))
            continue
        ref = next(iter(retrains.values()))
        ref_out = [load_outputs(r.path) for r in ref]
        tags: dict[str, list[Run]] = {}
        for r in runs:
            if not r.is_retrain:
                tags.setdefault(r.method_tag, []).append(r)
        for tag, mine in sorted(tags.items()):
            if min(len(mine), len(ref)) < need:
                a.notes.append(f"KLOM skips {tag} on {col}: {len(mine)} run(s) and {len(ref)} retrain(s); the "
                               f"{a.args.klom_fit} fit needs at least {need} of each (more seeds)")
                continue
            set_level, labels = a.forget_sets[str(mine[0].path)]
            a.records.extend(klom_group(a.targets[mine[0].path], [load_outputs(r.path) for r in mine], ref_out,
                                        labels, set_level, a.args.klom_fit, seeds=[r.seed for r in mine]))


def audit_relearn(a: Audit) -> None:
    args = a.args
    cfg = RelearnConfig(steps=args.relearn_steps, lr=args.relearn_lr, batch_size=args.relearn_batch_size,
                        fraction=args.relearn_fraction, on=args.relearn_on, seed=0)
    dev_data = a.data.to(a.device)
    for r in a.runs:
        model_file = r.path / paths.MODEL_FILE
        if not model_file.is_file():
            a.notes.append(f"relearning skips {r.path}: no {paths.MODEL_FILE} (run with --no_save?)")
            continue
        out = load_outputs(r.path)
        key = _key(r) or {}
        model = build_for(r.arch, a.data, imagenet_arch=bool(key.get("imagenet_arch")))
        load_into(model, model_file, arch=r.arch, num_classes=a.data.num_classes)
        torch.manual_seed(0)
        res = relearn(model.to(a.device), dev_data, out["forget"][0], out["retain"][0], cfg, a.device)
        a.records.append(Record("relearn", a.targets[r.path], a.forget_sets[str(r.path)][0],
                                {k: float(v) for k, v in res.items()}))


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def _intro(a: Audit) -> dict[str, str]:
    args = a.args
    test = ("Student-t prediction p-value (exact for Gaussian phi with few shadows)" if args.lira_test == "t"
            else "Gaussian p-value")
    return {
        "lira": (f"phi = z_y - logsumexp_(j!=y) z_j of the target on each forget example, tested against the "
                 f"Gaussian of phi over the OUT shadow models (one-sided, {test}). 'rejected' = forget examples "
                 f"whose p < {args.audit_level:g} (H0 'never seen' rejected; a retrain rejects about "
                 f"{100 * args.audit_level:g}%). AUC and TPR at low FPR: members = the forget examples, "
                 f"non-members = the test split, score = -log p. median log LR: the online likelihood ratio "
                 f"(IN vs OUT shadows) over the forget examples."),
        "klom": ("Per example KL(unlearned || retrain) of the margin z_y - logsumexp_(j!=y) z_j over seeds, "
                 + ("Gaussian fit per side (closed form)" if args.klom_fit == "gauss" else
                    f"{HIST_BINS}-bin shared histograms") + "; percentiles over the forget, retain and validation "
                 "examples (0 = indistinguishable from retraining)."),
        "relearn": (f"{args.relearn_steps} SGD steps (lr {args.relearn_lr:g}, momentum 0.9, batch "
                    f"{args.relearn_batch_size}, no augmentation) on "
                    + (f"{100 * args.relearn_fraction:g}% of the forget set" if args.relearn_on == "forget" else
                       "as many retain examples as that part of the forget set")
                    + "; accuracy on the rest of the forget set before and after. Compare with the retrain row."),
    }


def _figure(rows, out_dir: Path, test_level: float) -> list[Path]:
    """``audit.png`` / ``audit.pdf`` (matplotlib optional: without it one note line)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"{PROG}: note: matplotlib is not installed; no figure (pip install matplotlib)", file=sys.stderr)
        return []
    from results.figures import plot_audit

    return plot_audit(rows, out_dir / "audit", test_level)


def _finish(a: Audit, audits: tuple[str, ...], out_dir: Path) -> int:
    intro = {k: v for k, v in _intro(a).items() if k in audits}
    rows = aggregate(a.records)
    md = render_markdown(rows, intro, a.notes)
    print(md, end="")
    settings = {k: getattr(a.args, k) for k in ("audit", "num_shadows", "shadow_pool", "audit_level", "lira_test",
                                                 "klom_fit", "relearn_steps", "relearn_lr", "relearn_batch_size",
                                                 "relearn_fraction", "relearn_on")}
    settings.update(filters=a.filters.as_dict(), seconds=a.seconds, non_members="test split")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / "audit.md", md.encode())
        atomic_write_json(out_dir / "audit.json", report_json(rows, intro, a.notes, settings))
        written = [out_dir / "audit.md", out_dir / "audit.json"]
        if a.examples:
            atomic_save_npz(out_dir / "audit_examples.npz", **a.examples)
            written.append(out_dir / "audit_examples.npz")
    except OSError as e:
        raise UserError(f"--out {out_dir}: cannot write the tables ({e.strerror or e})") from None
    written += _figure(rows, out_dir, a.args.audit_level)
    took = ", ".join(f"{k} {v:.1f}s" for k, v in a.seconds.items())
    print(f"\nwrote {', '.join(map(str, written))} ({took})")
    return 0
