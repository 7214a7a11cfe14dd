"""The papers' figures, as PNG and PDF (matplotlib, optional: imported inside each function, so an
:class:`ImportError` tells the caller it is missing).

1. :func:`plot_levels`: the score (ToW or ToW-MIA) per method as grouped bars, one bar per
   memorization level (low, mid, high, mix), whiskers = the 95% Student-t interval over seeds; one
   panel per start model (SGD, SAM, ...). The bars stand alone: no line joins the levels.
2. :func:`plot_mem_bins`: forget accuracy and MIA-efficacy against the memorization score of the
   forget examples, binned (:mod:`results.membins`), one line per method, the retrain dashed; one
   row of panels per start model.
3. :func:`plot_audit`: the audits of ``analysis_audit.py`` (LiRA TPR at 1% FPR, the share
   rejected as never seen, KLOM's median over the forget set) per method as grouped bars, one bar
   per memorization level, whiskers = the 95% interval over seeds; one row of panels per start
   model, one column per figure of merit; the retrain control in the LiRA panels.

Both are sized for a two-column page width at most (7 in), 7-8 pt text, the legend outside the
data, saved with ``bbox_inches="tight"`` (no cut labels), in the Okabe-Ito colour-blind-safe
palette.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from evaluation.audits.levels import LEVEL_ORDER as AUDIT_LEVELS
from results.membins import MemBins
from results.table import LEVEL_ORDER, Column, Report
from utils.io import atomic_write_bytes

__all__ = ["OKABE_ITO", "LEVEL_COLORS", "AUDIT_PANELS", "plot_levels", "plot_mem_bins", "plot_audit", "level_family"]

OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
LEVEL_COLORS = {"low": "#56B4E9", "mid": "#E69F00", "high": "#D55E00", "mix": "#009E73"}
_STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
          "legend.fontsize": 7, "pdf.fonttype": 42}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, stem: Path) -> list[Path]:
    """``<stem>.png`` (200 dpi) and ``<stem>.pdf``, tight bounding box."""
    written = []
    for ext, kw in ((".png", {"dpi": 200}), (".pdf", {})):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext[1:], bbox_inches="tight", pad_inches=0.02, **kw)
        atomic_write_bytes(stem.with_suffix(ext), buf.getvalue())
        written.append(stem.with_suffix(ext))
    plt.close(fig)
    return written


def _recipes(labels: Sequence[str]) -> list[str]:
    return sorted(dict.fromkeys(labels), key=lambda p: (p != "SGD", p))


def level_family(rep: Report) -> tuple[str, list[Column]] | None:
    """The first family of memorization-level columns (true memorization before proxies)."""
    fams: dict[str, list[Column]] = {}
    for c in rep.columns:
        if c.family is not None:
            fams.setdefault(c.family, []).append(c)
    if not fams:
        return None
    fam, cols = next(iter(fams.items()))
    return fam, sorted(cols, key=lambda c: LEVEL_ORDER[c.mem_level])


def _bar_panel(ax, rep: Report, slots: list[str], rows: dict[str, str], cols: list[Column]) -> list[float]:
    """Grouped bars: one group per method label (``slots``; ``rows``: label -> this panel's row),
    one bar per level; the interval as whiskers. Returns the bar ends (for the y range)."""
    width = 0.8 / len(cols)
    ends: list[float] = []
    for j, c in enumerate(cols):
        xs, ys, errs = [], [], []
        for i, lab in enumerate(slots):
            cell = rep.cells.get((rows[lab], c.key)) if lab in rows else None
            if cell is None or cell.mean is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(cell.mean)
            errs.append(cell.half)
        ax.bar(xs, ys, width=width * 0.92, color=LEVEL_COLORS.get(c.mem_level, OKABE_ITO[j % 8]),
               edgecolor="black", linewidth=0.3, label=c.header or c.key)
        with_err = [(x, y, e) for x, y, e in zip(xs, ys, errs) if e is not None]
        if with_err:
            ex, ey, ee = zip(*with_err)
            ax.errorbar(ex, ey, yerr=ee, fmt="none", ecolor="black", elinewidth=0.7, capsize=1.5)
        ends += [y - (e or 0.0) for y, e in zip(ys, errs)] + [y + (e or 0.0) for y, e in zip(ys, errs)]
    ax.set_xlim(-0.6, len(slots) - 0.4)
    ax.grid(axis="y", alpha=0.3, linewidth=0.5)
    ax.set_axisbelow(True)
    return ends


def plot_levels(rep: Report, stem: str | Path) -> list[Path]:
    """Figure 1 as ``<stem>.png`` and ``<stem>.pdf``; ``[]`` (nothing drawn) when no column has a
    memorization level or no row is scored. The panels share the x axis: a method keeps its slot
    in every panel (empty where it was not run from that start model)."""
    fam = level_family(rep)
    if fam is None or not rep.rows:
        return []
    _, cols = fam
    plt = _pyplot()
    recipes = _recipes([rep.pretrained.get(r, "") for r, _ in rep.rows])
    slots = list(dict.fromkeys(rep.label(r) for r, _ in rep.rows))
    per = {p: {rep.label(r): r for r, _ in rep.rows if rep.pretrained.get(r, "") == p} for p in recipes}
    width = min(7.0, max(3.4, 0.8 + 0.07 * len(slots) * (len(cols) + 1)))
    interval = "one seed per cell: no interval" if rep.single_seed else "whiskers: 95% interval over seeds"
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(len(recipes), 1, figsize=(width, 1.6 * len(recipes) + 1.0), squeeze=False,
                                 sharex=True, sharey=True)
        ends: list[float] = []
        for ax, p in zip(axes[:, 0], recipes):
            ends += _bar_panel(ax, rep, slots, per[p], cols)
            ax.set_title(f"start model: {p}" if p else "start model", loc="left")
            ax.set_ylabel(rep.metric.title)
        if ends:
            lo = max(0.0, np.floor((min(ends) - 0.03) * 20) / 20)
            axes[0, 0].set_ylim(lo, max(1.0, max(ends)) + 0.01)
        bottom = axes[-1, 0]
        bottom.set_xticks(range(len(slots)))
        bottom.set_xticklabels(slots, rotation=40, ha="right", rotation_mode="anchor")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.tight_layout(h_pad=0.4)
        fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(cols), frameon=False,
                   title=f"forget set, by memorization level; {interval}", title_fontsize=7)
        return _save(plt, fig, Path(stem))


def _line_styles(n: int) -> list[tuple[str, str, str]]:
    colors = [c for c in OKABE_ITO if c != "#000000"]
    markers = "osD^vP*X"
    dashes = ["-", "-.", ":"]
    return [(colors[i % len(colors)], markers[i % len(markers)], dashes[(i // len(colors)) % len(dashes)])
            for i in range(n)]


def plot_mem_bins(bins: MemBins, stem: str | Path, title: str = "") -> list[Path]:
    """Figure 2 as ``<stem>.png`` and ``<stem>.pdf``; ``[]`` when no curve has data."""
    if not bins.curves:
        return []
    plt = _pyplot()
    recipes = _recipes([c.pretrained for c in bins.curves])
    centers = (bins.edges[:-1] + bins.edges[1:]) / 2
    names = list(dict.fromkeys(c.label for c in bins.curves if not c.reference))
    styles = dict(zip(names, _line_styles(len(names))))  # one style per method label in every panel
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(len(recipes), 2, figsize=(7.0, 2.1 * len(recipes) + 0.3), squeeze=False,
                                 sharex=True)
        handles: dict[str, object] = {}
        for k, p in enumerate(recipes):
            curves = [c for c in bins.curves if c.pretrained == p]
            for j, (what, ylab) in enumerate((("forget_acc", "forget accuracy"), ("mia", "MIA-efficacy"))):
                ax = axes[k, j]
                for c in curves:
                    color, marker, ls = ("#000000", "", "--") if c.reference else styles[c.label]
                    (h,) = ax.plot(centers, getattr(c, what), color=color, marker=marker or None, linestyle=ls,
                                   linewidth=1.0, markersize=3, label=c.label)
                    handles.setdefault(c.label, h)
                ax.set_ylabel(ylab)
                ax.set_ylim(-0.03, 1.03)
                ax.grid(alpha=0.3, linewidth=0.5)
                ax.set_title(f"start model: {p}" if p else "", loc="left")
                if k == len(recipes) - 1:
                    ax.set_xlabel("memorization score (bin centre)")
        axes[0, 0].set_xticks(bins.edges)
        fig.tight_layout()
        fig.legend(list(handles.values()), list(handles.keys()), loc="upper left", bbox_to_anchor=(1.0, 1.0),
                   frameon=False, title=title or None, title_fontsize=7)
        return _save(plt, fig, Path(stem))


# plot_audit's panels: (audit, metric key, y label, scale of the value).
AUDIT_PANELS = (("lira", "tpr@1%", "LiRA TPR@1%FPR (%)", 100.0),
                ("lira", "reject", "rejected as never seen (%)", 100.0),
                ("klom", "forget_p50", "KLOM, forget median", 1.0))


def plot_audit(rows: Sequence, stem: str | Path, test_level: float = 0.05) -> list[Path]:
    """The audit figure as ``<stem>.png`` and ``<stem>.pdf`` from the rows of
    :func:`evaluation.audits.report.aggregate` (``audit``, ``pretrained``, ``level``, ``name``,
    ``cells[key] = (mean, half-width, n)``); ``[]`` when no panel has a value. A method keeps its
    slot in the panels of one audit; levels in the order all, low, mid, high, mix (every value is
    non-negative: the y axis starts at 0, cutting whiskers below it). A dashed line marks
    ``test_level`` (LiRA's level) in the rejection panel: where a calibrated test puts a retrain."""
    order = AUDIT_LEVELS
    panels = [p for p in AUDIT_PANELS if any(r.audit == p[0] and np.isfinite(r.cells.get(p[1], (np.nan,))[0])
                                             for r in rows)]
    if not panels:
        return []
    plt = _pyplot()
    recipes = _recipes([r.pretrained for r in rows if r.audit in {p[0] for p in panels}])
    levels = sorted({r.level for r in rows}, key=lambda v: order.index(v) if v in order else len(order))
    width = 0.8 / len(levels)
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(len(recipes), len(panels), figsize=(7.0, 1.9 * len(recipes) + 0.9), squeeze=False)
        for i, pre in enumerate(recipes):
            mine = [r for r in rows if r.pretrained == pre]
            for j, (audit, key, ylabel, scale) in enumerate(panels):
                ax = axes[i, j]
                # the control first (LiRA), then the methods in the tables' order
                here = [r for r in mine if r.audit == audit]
                slots = list(dict.fromkeys([r.name for r in here if r.is_retrain] + [r.name for r in here]))
                for k, level in enumerate(levels):
                    xs, ys, errs = [], [], []
                    for r in mine:
                        c = r.cells.get(key)
                        if r.audit != audit or r.level != level or c is None or not np.isfinite(c[0]):
                            continue
                        xs.append(slots.index(r.name) - 0.4 + width * (k + 0.5))
                        ys.append(scale * c[0])
                        errs.append(scale * c[1] if c[1] is not None else 0.0)
                    ax.bar(xs, ys, width=width * 0.92, color=LEVEL_COLORS.get(level, OKABE_ITO[k % 8]),
                           edgecolor="black", linewidth=0.3, label=level)
                    if any(errs):
                        ax.errorbar(xs, ys, yerr=errs, fmt="none", ecolor="black", elinewidth=0.7, capsize=1.5)
                if key == "reject":
                    ax.axhline(100 * test_level, color="black", linestyle="--", linewidth=0.6)
                ax.set_xlim(-0.6, len(slots) - 0.4)
                ax.set_xticks(range(len(slots)))
                ax.set_xticklabels(slots, rotation=50, ha="right", rotation_mode="anchor", fontsize=6)
                ax.set_ylabel(ylabel)
                ax.set_ylim(bottom=0)
                ax.grid(axis="y", alpha=0.3, linewidth=0.5)
                ax.set_axisbelow(True)
                if j == 0:
                    ax.set_title(f"start model: {pre}", loc="left")
        handles = [plt.Rectangle((0, 0), 1, 1, color=LEVEL_COLORS.get(v, OKABE_ITO[k % 8])) for k, v in enumerate(levels)]
        fig.tight_layout(h_pad=0.6, w_pad=0.8)
        fig.legend(handles, levels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(levels), frameon=False,
                   title="memorization level of the forget examples; whiskers: 95% interval over seeds; "
                         f"dashed: the test's level ({100 * test_level:g}%)", title_fontsize=7)
        return _save(plt, fig, Path(stem))
