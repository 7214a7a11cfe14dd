"""``analysis.py`` and ``analysis_mia.py``: ToW / ToW-MIA tables over unlearning runs.

Flags choose the runs (``--runs``, default ``<ckpts>/unlearn``) and the table's rows and columns:
``--unlearn``, ``--mem``, ``--mem_proxy``, ``--num_indexes_to_replace``, ``--group_index``.
``--dataset`` and ``--arch`` filter only when given on the command line: the parser's defaults
(cifar10, resnet18) would otherwise hide every other run. The tables go to ``--out`` (default
``<ckpts>/analysis``) as ``<metric>.md``, ``.csv``, ``_runs.csv``, ``.json``, ``.tex`` and, with
matplotlib, the figure ``<metric>.png`` / ``.pdf`` (and for ``analysis.py`` the forget accuracy and
MIA-efficacy by memorization score, ``forget_by_mem.png`` / ``.pdf`` / ``.json``). ``--select
random`` keeps one setting per method and start model (:mod:`results.select`). ``analysis.py
--es`` computes the entanglement score of a forget set instead (:mod:`stages.entanglement`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable, Sequence

from arg_parser import given_flags, parse_args
from results.export import render_csv, render_runs_csv
from results.latex import render_latex
from results.render import render_markdown, report_json
from results.runs import Filters, Run, check_single, describe, discover, select
from results.select import select_rows
from results.table import METRICS, Report, build_report
from utils import paths
from utils.errors import UserError
from utils.io import atomic_write_bytes, atomic_write_json

__all__ = ["main", "run", "filters_from_args", "discover_runs", "select_runs"]

FILTERING_DEFAULTS = ("dataset", "arch")  # flags that filter only when given


def main(metric: str, prog: str, argv: Sequence[str] | None = None) -> int:
    """The whole of ``analysis.py`` (``metric="tow"``) / ``analysis_mia.py`` (``"tow_mia"``) on
    ``argv`` (default ``sys.argv[1:]``). Raises :class:`UserError` on bad input."""
    args = parse_args(argv, prog=prog)
    return run(args, metric, given=given_flags(argv, FILTERING_DEFAULTS, prog), prog=prog)


def filters_from_args(args: argparse.Namespace, given: Iterable[str]) -> Filters:
    """The table's filters; ``--dataset`` / ``--arch`` only when in ``given``."""
    given = set(given)
    return Filters(
        dataset=args.dataset if "dataset" in given else None,
        arch=str(args.arch).lower() if "arch" in given else None,
        unlearn=args.unlearn,
        mem=args.mem,
        mem_proxy=None if args.mem_proxy is None else str(args.mem_proxy).lower(),
        num_forget=args.num_indexes_to_replace,
        group_index=args.group_index,
        retrain=args.retrain,
    )


def run(args: argparse.Namespace, metric: str = "tow", *, given: Iterable[str] = (),
        prog: str = "analysis.py") -> int:
    """Tables of ``metric`` (a key of :data:`results.table.METRICS`) over the runs the flags
    select; ``given``: which of ``--dataset`` / ``--arch`` were on the command line."""
    m = METRICS[metric]
    if args.es:
        if metric != "tow":
            raise UserError("--es: the entanglement score is computed by analysis.py --es")
        from stages.entanglement import run as run_es

        return run_es(args)
    root = Path(args.runs) if args.runs else paths.unlearn_root(args.ckpts)
    out_dir = Path(args.out) if args.out else paths.analysis_dir(args.ckpts)
    runs, skipped = discover_runs(root, prog)
    filters = filters_from_args(args, given)
    selected = select_runs(runs, filters, root)
    selection = None
    if args.select:
        pool = select(runs, Filters(dataset=selected[0].dataset, arch=selected[0].arch, unlearn=filters.unlearn,
                                    retrain=filters.retrain))
        selected, selection = select_rows(selected, pool, m, args.select)
    rep = build_report(selected, m, root=str(root), filters=filters, no_aug=args.no_aug, skipped=skipped)
    rep.selection = selection
    md = render_markdown(rep)
    print(md, end="")
    for n in rep.notes:
        if n.startswith("no retrain runs"):
            print(f"{prog}: warning: {n}", file=sys.stderr)
    written = _write(rep, md, out_dir / m.name)
    written += _figures(rep, out_dir, m.name, [args.ckpts, root.parent], prog)
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


def discover_runs(root: Path, prog: str) -> tuple[list[Run], list[str]]:
    """Every run under ``root`` (a warning per skipped file); none is a :class:`UserError`."""
    runs, skipped = discover(root)
    for s in skipped:
        print(f"{prog}: warning: skipped {s}", file=sys.stderr)
    if not runs:
        where = "does not exist" if not root.is_dir() else "holds no unlearning run (metrics.json)"
        raise UserError(f"--runs {root}: {where}; unlearning runs are written by main_forget.py under "
                        f"<ckpts>/unlearn/<forget set>/<model>/<method>/seed<seed>/")
    return runs, skipped


def select_runs(runs: list[Run], filters: Filters, root: Path) -> list[Run]:
    """The runs the filters keep, of one dataset and architecture; none is a :class:`UserError`."""
    selected = select(runs, filters)
    if not selected:
        raise UserError(f"no run under {root} matches {filters.flags()}; found {len(runs)} runs: {describe(runs)}")
    if not any(not r.is_retrain for r in selected) and filters.unlearn and filters.unlearn.lower() != "retrain":
        raise UserError(f"no {filters.unlearn} run under {root} matches {filters.flags()}; "
                        f"found {len(runs)} runs: {describe(runs)}")
    check_single(selected)
    return selected


def _write(rep: Report, md: str, stem: Path) -> list[Path]:
    """``<stem>.md``, ``.csv``, ``_runs.csv``, ``.json`` and ``.tex``; the paths written."""
    files = {stem.with_suffix(".md"): md, stem.with_suffix(".csv"): render_csv(rep),
             stem.parent / f"{stem.name}_runs.csv": render_runs_csv(rep), stem.with_suffix(".tex"): render_latex(rep)}
    try:
        for path, text in files.items():
            atomic_write_bytes(path, text.encode())
        atomic_write_json(stem.with_suffix(".json"), report_json(rep))
    except OSError as e:
        raise UserError(f"--out {stem.parent}: cannot write the tables ({e.strerror or e})") from None
    return list(files) + [stem.with_suffix(".json")]


def _figures(rep: Report, out_dir: Path, name: str, ckpts: list, prog: str) -> list[Path]:
    """The figures (matplotlib optional: without it one note line); ``analysis.py`` adds the
    forget accuracy and MIA-efficacy by memorization score (skipped, with a note, without scores)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"{prog}: note: matplotlib is not installed; no figures (pip install matplotlib)", file=sys.stderr)
        return []
    from results.figures import plot_levels, plot_mem_bins
    from results.membins import mem_bins

    written = plot_levels(rep, out_dir / name)
    if name != "tow" or not rep.rows:
        return written
    bins = mem_bins(rep, [c for c in ckpts if c is not None])
    if bins.notes:  # one line: the first reason, and how many more (all in forget_by_mem.json)
        more = f" (and {len(bins.notes) - 1} more)" if len(bins.notes) > 1 else ""
        print(f"{prog}: note: forget_by_mem: {bins.notes[0]}{more}", file=sys.stderr)
    if bins.curves:
        atomic_write_json(out_dir / "forget_by_mem.json", bins.as_json())
        written += [out_dir / "forget_by_mem.json"]
        written += plot_mem_bins(bins, out_dir / "forget_by_mem", title=f"{rep.dataset} / {rep.arch}")
    else:
        print(f"{prog}: note: no forget_by_mem figure: no run with outputs.npz and memorization scores", file=sys.stderr)
    return written
