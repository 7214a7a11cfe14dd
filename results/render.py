"""The table as text and pictures: Markdown (printed, and ``<stem>.md``), CSV (one line per method and
forget set, fractions), JSON (everything, per seed) and a PNG plot (matplotlib, optional).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from results.runs import MIA_ATTACK
from results.table import CONFIDENCE, LEVEL_ORDER, Cell, Column, Report
from utils.io import atomic_write_bytes

__all__ = ["cell_text", "render_markdown", "render_csv", "report_json", "plot", "json_num", "CSV_FIELDS"]


def _seeds(xs: Iterable[int]) -> str:
    return ", ".join(str(s) for s in sorted(xs))


def cell_text(cell: Cell | None) -> str:
    """``0.912 ± 0.034 (3 seeds)``; one seed: ``0.912 (1 seed, no interval)``; plus notes on
    seeds without a retrain reference; ``—`` when the method has no run on that forget set."""
    if cell is None:
        return "—"
    parts = []
    n = len(cell.values)
    if n:
        if cell.half is None:
            parts.append(f"{cell.mean:.3f} (1 seed, no interval)")
        else:
            parts.append(f"{cell.mean:.3f} ± {cell.half:.3f} ({n} seeds)")
    if cell.missing_retrain:
        parts.append(f"no retrain for seed(s) {_seeds(cell.missing_retrain)}")
    other = [s for s in cell.results if s.retrain is not None and s.value is None]
    if other:
        parts.append(f"not scored for seed(s) {_seeds(s.seed for s in other)}")
    if cell.collapsed_seeds:
        parts.append(f"collapsed: seed(s) {_seeds(cell.collapsed_seeds)}")
    return "; ".join(parts) if parts else "—"


def _pct(v: float) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def render_markdown(rep: Report) -> str:
    m = rep.metric
    out = io.StringIO()
    w = out.write
    w(f"# {m.title}: {rep.dataset} / {rep.arch}\n\n")
    w(f"{m.title} = {m.formula}, against the retrain run of the same forget set and seed "
      f"(u = unlearned, r = retrain). Cells: mean ± half-width of the {int(CONFIDENCE * 100)}% Student-t "
      f"interval over seeds.\n\n")
    flags = rep.filters.flags()
    w(f"Runs: `{rep.root}` ({rep.n_runs} selected{'; ' + flags if flags else ''}"
      f"{'; --no_aug has no effect here' if rep.no_aug else ''}).\n\n")
    if rep.rows:
        w("| method | pretrained | " + " | ".join(_md_escape(c.key) for c in rep.columns) + " |\n")
        w("|---|---|" + "---|" * len(rep.columns) + "\n")
        for tag, _ in rep.rows:
            w(f"| {_md_escape(tag)} | {_md_escape(rep.pretrained.get(tag, ''))} | "
              + " | ".join(_md_escape(cell_text(rep.cells.get((tag, c.key)))) for c in rep.columns) + " |\n")
    else:
        w("_No unlearned runs to score._\n")
    w("\n## Detail (means over seeds)\n\n")
    w(f"Accuracies and MIA-efficacy ({MIA_ATTACK} attack) in %, averaged over every seed of the cell.\n\n")
    w(f"| method | pretrained | forget set | seeds | retain acc | forget acc | test acc | MIA-efficacy | {m.title} |\n")
    w("|---|---|---|---|---|---|---|---|---|\n")
    for tag, _method in list(rep.rows) + list(rep.ref_rows):
        is_ref = (tag, _method) in rep.ref_rows
        for c in rep.columns:
            cell = rep.cells.get((tag, c.key))
            if cell is None:
                continue
            mm = cell.means()
            score = "reference" if is_ref else (f"{cell.mean:.3f}" if cell.mean is not None else "—")
            w(f"| {_md_escape(tag)} | {_md_escape(rep.pretrained.get(tag, ''))} | {_md_escape(c.key)} | "
              f"{_seeds(cell.seeds)} | {_pct(mm['retain'])} | "
              f"{_pct(mm['forget'])} | {_pct(mm['test'])} | {_pct(mm['mia'])} | {score} |\n")
    notes = list(rep.notes)
    for cell in rep.cells.values():
        notes.extend(f"{cell.row} / {cell.column}: {n}" for n in cell.notes)
    if rep.skipped:
        notes.append(f"{len(rep.skipped)} metrics.json file(s) skipped (see the JSON output)")
    if notes:
        w("\nNotes:\n\n")
        for n in notes:
            w(f"- {_md_escape(n)}\n")
    return out.getvalue()


CSV_FIELDS = ("method", "method_tag", "pretrained", "forget_set", "forget_kind", "mem_level", "mem_proxy", "group_index",
              "num_forget", "seeds", "n_seeds", "{m}_mean", "{m}_half_width", "{m}_low", "{m}_high",
              "retain", "forget", "test", "mia_confidence", "missing_retrain_seeds", "collapsed_seeds", "note")


def _fmt_num(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else repr(float(v))


def render_csv(rep: Report) -> str:
    """One line per (method tag, forget set), retrain rows included; fractions, not percent."""
    m = rep.metric.name
    out = io.StringIO()
    wr = csv.writer(out, lineterminator="\n")
    wr.writerow([f.format(m=m) for f in CSV_FIELDS])
    for tag, method in list(rep.rows) + list(rep.ref_rows):
        for c in rep.columns:
            cell = rep.cells.get((tag, c.key))
            if cell is None:
                continue
            mm = cell.means()
            is_ref = method.lower() == "retrain"
            lo = hi = None
            if cell.mean is not None and cell.half is not None:
                lo, hi = cell.mean - cell.half, cell.mean + cell.half
            wr.writerow([
                method, tag, rep.pretrained.get(tag, ""), c.key, c.kind or "", c.mem_level or "", c.mem_proxy or "",
                "" if c.group_index is None else c.group_index, "" if c.num_forget is None else c.num_forget,
                " ".join(str(s) for s in cell.seeds), len(cell.values) if not is_ref else "",
                _fmt_num(cell.mean), _fmt_num(cell.half), _fmt_num(lo), _fmt_num(hi),
                _fmt_num(mm["retain"]), _fmt_num(mm["forget"]), _fmt_num(mm["test"]), _fmt_num(mm["mia"]),
                "" if is_ref else " ".join(str(s) for s in cell.missing_retrain),
                " ".join(str(s) for s in cell.collapsed_seeds),
                "reference" if is_ref else "; ".join(cell.notes),
            ])
    return out.getvalue()


def json_num(v: Any) -> Any:
    """``v``, or None for a non-finite float (JSON has no NaN)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def report_json(rep: Report) -> dict[str, Any]:
    m = rep.metric
    cells = []
    for (tag, col), cell in sorted(rep.cells.items()):
        is_ref = cell.method.lower() == "retrain"
        cells.append({
            "method": cell.method, "method_tag": tag, "pretrained": rep.pretrained.get(tag), "forget_set": col,
            "reference": is_ref,
            "seeds": cell.seeds, "n": len(cell.values),
            "mean": json_num(cell.mean), "half_width": json_num(cell.half),
            "text": "reference" if is_ref else cell_text(cell),
            "missing_retrain_seeds": [] if is_ref else cell.missing_retrain,
            "collapsed_seeds": cell.collapsed_seeds,
            "means": {k: json_num(v) for k, v in cell.means().items()},
            "notes": cell.notes,
            "per_seed": [{
                "seed": s.seed, "value": json_num(s.value), "run_dir": str(s.run.path),
                "retrain_dir": None if s.retrain is None else str(s.retrain.path),
                "forget_set": s.run.forget_set, "forget_set_sha256": s.run.sha,
                "accuracy": {k: json_num(v) for k, v in s.run.accuracy.items()},
                "mia": {k: json_num(v) for k, v in s.run.mia.items()},
                "collapsed": s.run.collapsed,
            } for s in cell.results],
        })
    return {
        "metric": m.name, "title": m.title, "formula": m.formula, "confidence": CONFIDENCE,
        "dataset": rep.dataset, "arch": rep.arch, "runs_root": rep.root, "filters": rep.filters.as_dict(),
        "no_aug": rep.no_aug, "n_runs": rep.n_runs,
        "columns": [c.__dict__ for c in rep.columns],
        "rows": [{"method_tag": t, "method": mth, "pretrained": rep.pretrained.get(t)} for t, mth in rep.rows],
        "reference_rows": [{"method_tag": t, "method": mth, "pretrained": rep.pretrained.get(t)}
                           for t, mth in rep.ref_rows],
        "table": {t: {c.key: cell_text(rep.cells.get((t, c.key))) for c in rep.columns} for t, _ in rep.rows},
        "cells": cells, "notes": rep.notes, "skipped": rep.skipped,
    }


def plot(rep: Report, path: str | Path) -> bool:
    """``path`` (PNG): the score per method across memorization levels, one panel per family
    (true memorization; each proxy), error bars = the confidence interval. Returns False (and
    draws nothing) when no forget set has a memorization level. Needs matplotlib (imported here:
    an optional dependency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams: dict[str, list[Column]] = {}
    for c in rep.columns:
        if c.family is not None:
            fams.setdefault(c.family, []).append(c)
    if not fams or not rep.rows:
        return False
    fig, axes = plt.subplots(1, len(fams), figsize=(5 * len(fams), 4), squeeze=False)
    for ax, (fam, cols) in zip(axes[0], fams.items()):
        cols = sorted(cols, key=lambda c: LEVEL_ORDER[c.mem_level])
        xs = np.arange(len(cols))
        drawn = False
        for tag, _ in rep.rows:
            ys, es, xi = [], [], []
            for i, c in enumerate(cols):
                cell = rep.cells.get((tag, c.key))
                if cell is None or cell.mean is None:
                    continue
                xi.append(i)
                ys.append(cell.mean)
                es.append(cell.half or 0.0)
            if xi:
                ax.errorbar(xi, ys, yerr=es, marker="o", capsize=3, label=tag)
                drawn = True
        ax.set_xticks(xs)
        ax.set_xticklabels([c.mem_level for c in cols])
        ax.set_xlabel("memorization level")
        ax.set_ylabel(rep.metric.title)
        ax.set_title(fam)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no retrain reference", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"{rep.metric.title}: {rep.dataset} / {rep.arch}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True
