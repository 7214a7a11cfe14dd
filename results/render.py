"""The table as text: Markdown (printed, and ``<stem>.md``) and JSON (everything, per seed). The
CSV files are written by :mod:`results.export`, LaTeX by :mod:`results.latex`, the figures by
:mod:`results.figures`.
"""
from __future__ import annotations

import io
import math
from typing import Any, Iterable

from results.runs import MIA_ATTACK
from results.table import CONFIDENCE, Cell, Report

__all__ = ["cell_text", "caption_lines", "render_markdown", "report_json", "json_num", "seeds_text"]


def seeds_text(xs: Iterable[int]) -> str:
    return ", ".join(str(s) for s in sorted(xs))


def cell_text(cell: Cell | None, single: bool = False) -> str:
    """``0.912 ± 0.034 (3 seeds)``; one seed: ``0.912 (1 seed, no interval)``, or ``0.912`` when
    ``single`` (every cell of the table has one seed: the caption says so once); plus notes on
    seeds without a retrain reference; ``—`` when the method has no run on that forget set."""
    if cell is None:
        return "—"
    parts = []
    n = len(cell.values)
    if n:
        if cell.half is None:
            parts.append(f"{cell.mean:.3f}" if single else f"{cell.mean:.3f} (1 seed, no interval)")
        else:
            parts.append(f"{cell.mean:.3f} ± {cell.half:.3f} ({n} seeds)")
    if cell.missing_retrain:
        parts.append(f"no retrain for seed(s) {seeds_text(cell.missing_retrain)}")
    other = [s for s in cell.results if s.retrain is not None and s.value is None]
    if other:
        parts.append(f"not scored for seed(s) {seeds_text(s.seed for s in other)}")
    if cell.collapsed_seeds:
        parts.append(f"collapsed: seed(s) {seeds_text(cell.collapsed_seeds)}")
    return "; ".join(parts) if parts else "—"


def _pct(v: float) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def caption_lines(rep: Report) -> list[str]:
    """The lines under the score table: the hyperparameters each method's rows share, those a
    label leaves out, the one-seed note and the ``--select`` choice."""
    out = []
    names = list(dict.fromkeys(rep.info[r].name for r, _ in rep.rows if r in rep.info))
    shared = [f"{name}: {', '.join(rep.shared[name])}" for name in names if rep.shared.get(name)]
    if shared:
        out.append("Hyperparameters shared by every row of a method: " + "; ".join(shared) + ".")
    hidden = [f"{rep.label(r)} [{rep.pretrained.get(r, '')}]: {', '.join(rep.info[r].hidden)}"
              for r, _ in rep.rows if rep.info.get(r) is not None and rep.info[r].hidden]
    if hidden:
        out.append("Rows that also differ in: " + "; ".join(hidden) + ".")
    if rep.single_seed:
        out.append(f"Every cell has one seed: no {int(CONFIDENCE * 100)}% interval (run more seeds for one).")
    if rep.selection:
        out.append(rep.selection["text"])
    return out


def _score_table(rep: Report, w) -> None:
    w("| method | pretrained | " + " | ".join(_md_escape(c.header or c.key) for c in rep.columns) + " |\n")
    w("|---|---|" + "---|" * len(rep.columns) + "\n")
    single = rep.single_seed
    for row, _ in rep.rows:
        w(f"| {_md_escape(rep.label(row))} | {_md_escape(rep.pretrained.get(row, ''))} | "
          + " | ".join(_md_escape(cell_text(rep.cells.get((row, c.key)), single)) for c in rep.columns) + " |\n")
    w("\n")
    for line in caption_lines(rep):
        w(_md_escape(line) + "\n\n")


def _detail_table(rep: Report, w) -> None:
    m = rep.metric
    w("\n## Detail (means over seeds)\n\n")
    w(f"Accuracies and MIA-efficacy ({MIA_ATTACK} attack) in %, averaged over every seed of the cell.\n\n")
    w(f"| method | pretrained | forget set | seeds | retain acc | forget acc | test acc | MIA-efficacy | {m.title} |\n")
    w("|---|---|---|---|---|---|---|---|---|\n")
    for row, method in list(rep.rows) + list(rep.ref_rows):
        is_ref = (row, method) in rep.ref_rows
        for c in rep.columns:
            cell = rep.cells.get((row, c.key))
            if cell is None:
                continue
            mm = cell.means()
            score = "reference" if is_ref else (f"{cell.mean:.3f}" if cell.mean is not None else "—")
            w(f"| {_md_escape(rep.label(row))} | {_md_escape(rep.pretrained.get(row, ''))} | "
              f"{_md_escape(c.header or c.key)} | {seeds_text(cell.seeds)} | {_pct(mm['retain'])} | "
              f"{_pct(mm['forget'])} | {_pct(mm['test'])} | {_pct(mm['mia'])} | {score} |\n")


def render_markdown(rep: Report) -> str:
    m = rep.metric
    out = io.StringIO()
    w = out.write
    w(f"# {m.title}: {rep.dataset} / {rep.arch}\n\n")
    w(f"{m.title} = {m.formula}, against the retrain run of the same forget set, seed and pretraining recipe "
      f"(u = unlearned, r = retrain). Cells: mean ± half-width of the {int(CONFIDENCE * 100)}% Student-t "
      f"interval over seeds. Columns: forget sets, n = distinct forget examples.\n\n")
    flags = rep.filters.flags()
    w(f"Runs: `{rep.root}` ({rep.n_runs} selected{'; ' + flags if flags else ''}"
      f"{'; --no_aug has no effect here' if rep.no_aug else ''}).\n\n")
    if rep.rows:
        _score_table(rep, w)
    else:
        w("_No unlearned runs to score._\n")
    _detail_table(rep, w)
    notes = list(rep.notes)
    for cell in rep.cells.values():
        notes.extend(f"{rep.label(cell.row)} [{rep.pretrained.get(cell.row, '')}] / {cell.column}: {n}"
                     for n in cell.notes)
    if rep.skipped:
        notes.append(f"{len(rep.skipped)} metrics.json file(s) skipped (see the JSON output)")
    if notes:
        w("\nNotes:\n\n")
        for n in notes:
            w(f"- {_md_escape(n)}\n")
    return out.getvalue()


def json_num(v: Any) -> Any:
    """``v``, or None for a non-finite float (JSON has no NaN)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _row_json(rep: Report, row: str, method: str) -> dict[str, Any]:
    info = rep.info.get(row)
    return {"row": row, "label": rep.label(row), "method": method,
            "method_tag": info.method_tag if info else row, "paper_name": info.name if info else method,
            "pretrained": rep.pretrained.get(row), "hparams": dict(info.hparams) if info else {},
            "hidden": list(info.hidden) if info else []}


def _cell_json(rep: Report, row: str, col: str, cell: Cell, single: bool) -> dict[str, Any]:
    is_ref = cell.method.lower() == "retrain"
    info = rep.info.get(row)
    return {
        "row": row, "label": rep.label(row), "method": cell.method,
        "method_tag": info.method_tag if info else row, "pretrained": rep.pretrained.get(row),
        "forget_set": col, "reference": is_ref,
        "seeds": cell.seeds, "n": len(cell.values),
        "mean": json_num(cell.mean), "half_width": json_num(cell.half),
        "text": "reference" if is_ref else cell_text(cell, single),
        "missing_retrain_seeds": [] if is_ref else cell.missing_retrain,
        "collapsed_seeds": cell.collapsed_seeds,
        "means": {k: json_num(v) for k, v in cell.means().items()},
        "notes": cell.notes,
        "per_seed": [{
            "seed": s.seed, "value": json_num(s.value), "run_dir": str(s.run.path),
            "retrain_dir": None if s.retrain is None else str(s.retrain.path),
            "forget_set": s.run.forget_set, "forget_set_sha256": s.run.sha, "num_forget": s.run.num_forget,
            "accuracy": {k: json_num(v) for k, v in s.run.accuracy.items()},
            "mia": {k: json_num(v) for k, v in s.run.mia.items()},
            "collapsed": s.run.collapsed,
        } for s in cell.results],
    }


def report_json(rep: Report) -> dict[str, Any]:
    """Everything: rows (label, method tag, hyperparameters), columns (header, sizes), the cells
    with their per-seed values and run directories, captions, notes, and the ``--select`` choice."""
    m = rep.metric
    single = rep.single_seed
    cells = [_cell_json(rep, row, col, cell, single) for (row, col), cell in sorted(rep.cells.items())]
    return {
        "metric": m.name, "title": m.title, "formula": m.formula, "confidence": CONFIDENCE,
        "dataset": rep.dataset, "arch": rep.arch, "runs_root": rep.root, "filters": rep.filters.as_dict(),
        "no_aug": rep.no_aug, "n_runs": rep.n_runs, "single_seed": single,
        "columns": [dict(c.__dict__) for c in rep.columns],
        "rows": [_row_json(rep, r, mth) for r, mth in rep.rows],
        "reference_rows": [_row_json(rep, r, mth) for r, mth in rep.ref_rows],
        "shared_hparams": rep.shared, "captions": caption_lines(rep),
        "table": {r: {c.key: cell_text(rep.cells.get((r, c.key)), single) for c in rep.columns} for r, _ in rep.rows},
        "cells": cells, "notes": rep.notes, "skipped": rep.skipped, "selection": rep.selection,
    }
