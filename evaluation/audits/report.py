"""The audits' tables: per-run values grouped by method, forget set and memorization level,
aggregated over seeds (mean and 95% Student-t half-width, :func:`evaluation.metrics.mean_ci`),
rendered as Markdown and JSON."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from evaluation.audits.levels import LEVEL_ORDER
from evaluation.metrics import mean_ci

__all__ = ["Target", "Record", "Row", "COLUMNS", "aggregate", "render_markdown", "report_json"]

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Target:
    """One audited run, as the tables label it."""

    path: str
    method: str
    tag: str
    seed: int
    column: str  # the forget-set column (results.runs.column_label)
    pretrained: str  # the start model's recipe label (SGD, SAM-min ...)
    is_retrain: bool = False
    label: str = ""  # the method's row label (results.labels; "" = the tag)


@dataclass
class Record:
    """The values of one audit on one run (or, KLOM, on one method's runs) at one level."""

    audit: str  # lira | klom | relearn
    target: Target
    level: str
    values: dict[str, float]
    seeds: tuple[int, ...] = ()


@dataclass
class Row:
    audit: str
    pretrained: str
    column: str
    level: str
    tag: str
    is_retrain: bool
    seeds: list[int]
    cells: dict[str, tuple[float, float | None, int]]  # metric -> (mean, half-width, n values)
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""  # the method's row label (results.labels), the tag where none was given

    @property
    def name(self) -> str:
        """What tables and figures call the row: its label, "(control)" for the retrain."""
        return (self.label or self.tag) + (" (control)" if self.is_retrain else "")


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _f3(v: float) -> str:
    return f"{v:.3f}"


# Per audit: (metric key, column title, formatter).
COLUMNS: dict[str, list[tuple[str, str, Callable[[float], str]]]] = {
    "lira": [("reject", "rejected (%)", _pct), ("auc", "AUC", _f3), ("tpr@0.1%", "TPR@0.1%FPR (%)", _pct),
             ("tpr@1%", "TPR@1%FPR (%)", _pct), ("median_log_lr", "median log LR", _f3),
             ("n", "forget examples", lambda v: f"{v:.0f}")],
    "klom": [(f"{s}_p{q}", f"{s} p{q}", _f3) for s in ("forget", "retain", "val") for q in (50, 90, 99)],
    "relearn": [("before", "held-out forget acc before (%)", _pct), ("after", "after (%)", _pct),
                ("gain", "gain (points)", _pct), ("test_after", "test acc after (%)", _pct)],
}


def _method_rank(tag: str, is_retrain: bool) -> tuple[int, str]:
    low = tag.lower()
    return (0 if is_retrain else 1 if low.startswith(("original", "raw")) else 2, tag)


def aggregate(records: Iterable[Record], confidence: float = CONFIDENCE) -> list[Row]:
    """One row per (audit, pretrained recipe, forget-set column, level, method tag): every metric's
    mean over the runs (seeds) and the half-width of its Student-t interval (None with one value);
    nan values are left out (a cell with none is nan)."""
    groups: dict[tuple, list[Record]] = {}
    for r in records:
        t = r.target
        groups.setdefault((r.audit, t.pretrained, t.column, r.level, t.tag, t.is_retrain), []).append(r)
    rows = []
    for (audit, pre, col, level, tag, is_rt), recs in groups.items():
        keys = sorted({k for r in recs for k in r.values})
        cells = {}
        for k in keys:
            vals = [float(r.values[k]) for r in recs if k in r.values and np.isfinite(r.values[k])]
            cells[k] = (*mean_ci(vals, confidence), len(vals)) if vals else (math.nan, None, 0)
        seeds = sorted({s for r in recs for s in (r.seeds or (r.target.seed,))})
        per_seed = [{"seed": r.target.seed, "run": r.target.path, **r.values} for r in recs]
        rows.append(Row(audit, pre, col, level, tag, is_rt, seeds, cells, per_seed, recs[0].target.label or tag))
    rows.sort(key=lambda r: (r.audit, r.pretrained, r.column, LEVEL_ORDER.index(r.level) if r.level in LEVEL_ORDER
                             else len(LEVEL_ORDER), _method_rank(r.tag, r.is_retrain)))
    return rows


def _cell(c: tuple[float, float | None, int] | None, fmt: Callable[[float], str]) -> str:
    if c is None or c[2] == 0 or not math.isfinite(c[0]):
        return "n/a"
    mean, half, _ = c
    return fmt(mean) if half is None or half == 0 else f"{fmt(mean)} ± {fmt(half)}"


def _md(s: str) -> str:
    return str(s).replace("|", "\\|")


def render_table(rows: Sequence[Row], audit: str) -> str:
    cols = COLUMNS[audit]
    show_pre = len({r.pretrained for r in rows}) > 1
    head = ((["pretrained"] if show_pre else []) + ["forget set", "mem level", "method"] + [c[1] for c in cols]
            + ["seeds", "run tag"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cell(r.cells.get(k), f) for k, _, f in cols]
        seeds = ",".join(map(str, r.seeds))
        lines.append("| " + " | ".join(_md(x) for x in ([r.pretrained] if show_pre else []) +
                                       [r.column, r.level, r.name] + cells + [seeds, r.tag]) + " |")
    return "\n".join(lines) + "\n"


TITLES = {
    "lira": "LiRA against the unlearned model (U-LiRA)",
    "klom": "KLOM: KL divergence of margins, unlearned vs retrained, over seeds",
    "relearn": "Relearning attack",
}


def render_markdown(rows: Sequence[Row], intro: dict[str, str], notes: Sequence[str]) -> str:
    """The whole report: per audit a title, ``intro[audit]`` (what was measured, how), the table;
    then the notes."""
    out = ["# Unlearning audits\n"]
    for audit in ("lira", "klom", "relearn"):
        mine = [r for r in rows if r.audit == audit]
        if audit not in intro:
            continue
        out.append(f"\n## {TITLES[audit]}\n\n{intro[audit]}\n")
        out.append("\n" + (render_table(mine, audit) if mine else "(no rows)\n"))
    if notes:
        out.append("\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes))
    out.append("\nCells: mean ± half-width of the 95% Student-t interval over seeds (no interval with one seed).\n")
    return "".join(out)


def _num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return _num(v.item())
    return v


def report_json(rows: Sequence[Row], intro: dict[str, str], notes: Sequence[str],
                settings: dict[str, Any]) -> dict[str, Any]:
    def row(r: Row) -> dict[str, Any]:
        d = asdict(r)
        d["cells"] = {k: {"mean": _num(m), "half_width": _num(h), "n": n} for k, (m, h, n) in r.cells.items()}
        d["per_seed"] = [{k: _num(v) for k, v in p.items()} for p in r.per_seed]
        return d

    return {"settings": settings, "intro": intro, "notes": list(notes), "rows": [row(r) for r in rows]}
