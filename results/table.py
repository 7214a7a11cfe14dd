"""Scoring runs against their retrain reference, and aggregating the scores into a table.

1. **Pairing.** Every non-retrain run is scored against the retrain run of the same dataset,
   architecture, forget set (its sha256; the forget-set name when a sha is missing), seed and
   pretraining recipe of the start model (DESIGN.md §7.2; :class:`RetrainIndex`): an
   SGD-pretrained model is compared with the SGD-recipe retrain, a SAM-pretrained one with the
   SAM-recipe retrain. No matching retrain: the cell says so. Several: refused, naming them and
   ``--retrain TAG``, which picks one.
2. **Aggregation.** Per (row, forget set): mean over seeds and the half-width of the 95%
   Student-t interval (:func:`evaluation.metrics.mean_ci`). A row is one method tag (method and
   hyperparameters) from one pretraining recipe (:func:`recipe_rows`); the seed is not part of
   the recipe, so seeds aggregate in one row. Forget sets whose name carries a seed (random,
   class, shuffled) are pooled over seeds into one column, named without the seed.
3. **Labels.** Each row is labelled with its method's paper name and the hyperparameters that
   differ among that method's rows (:mod:`results.labels`); columns are ordered low, mid, high,
   mix, then the other kinds, each headed with the number of distinct forget examples.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from evaluation.metrics import mean_ci, tow, tow_mia
from results.labels import RowSpec, common_hparams, display_name, label_rows, method_rank, run_hparams
from results.runs import Filters, Run
from utils.errors import UserError

__all__ = ["CONFIDENCE", "LEVEL_ORDER", "KIND_ORDER", "Metric", "METRICS", "Column", "SeedResult", "Cell",
           "RowInfo", "Report", "RetrainIndex", "recipe_rows", "fill_cells", "order_rows_and_columns",
           "row_info", "coverage_notes", "build_report", "nominal_size"]

CONFIDENCE = 0.95
LEVEL_ORDER = {"low": 0, "mid": 1, "high": 2, "mix": 3}
KIND_ORDER = {"mem": 0, "proxy": 1, "es": 2, "random": 3, "class": 4}


def _tow(u: Run, r: Run) -> float:
    return tow(u.accuracy, r.accuracy)


def _tow_mia(u: Run, r: Run) -> float:
    return tow_mia({"mia": u.mia_value, **u.accuracy}, {"mia": r.mia_value, **r.accuracy})


@dataclass(frozen=True)
class Metric:
    name: str  # file stem and JSON key: tow | tow_mia
    title: str  # ToW | ToW-MIA
    formula: str
    score: Callable[[Run, Run], float]


METRICS: dict[str, Metric] = {
    "tow": Metric("tow", "ToW", "(1-|FA_u-FA_r|)(1-|RA_u-RA_r|)(1-|TA_u-TA_r|)", _tow),
    "tow_mia": Metric("tow_mia", "ToW-MIA", "(1-|MIA_u-MIA_r|)(1-|RA_u-RA_r|)(1-|TA_u-TA_r|), "
                      "MIA = the confidence attack's MIA-efficacy", _tow_mia),
}


@dataclass
class Column:
    """One forget-set column of the table (seeds of a seeded forget set pooled)."""

    key: str  # the column label (results.runs.column_label)
    kind: str | None  # mem | proxy | es | random | class
    mem_level: str | None  # low | mid | high | mix, lower case
    mem_proxy: str | None
    group_index: int | None  # ES group
    num_forget: int | None
    sizes: tuple[int, ...] = ()  # the distinct num_forget of its runs (a mix may hold fewer than n)
    header: str = ""  # the table header: "mix (n=77)"

    def sort_key(self) -> tuple:
        group = self.group_index if self.group_index is not None else -2
        return (KIND_ORDER.get(self.kind or "", len(KIND_ORDER)), self.kind or "", self.mem_proxy or "",
                nominal_size(self.key) or self.num_forget or 0, "shuffle" in self.key.split("_"),
                LEVEL_ORDER.get(self.mem_level or "", len(LEVEL_ORDER)),
                group if group >= 0 else 10 ** 9, self.key)

    @property
    def family(self) -> str | None:
        """The plot family (mem levels, or one proxy's levels); None when not level-based."""
        if self.mem_level not in LEVEL_ORDER:
            return None
        if self.kind == "mem":
            fam = "memorization"
        elif self.kind == "proxy":
            fam = f"proxy {self.mem_proxy}"
        else:
            return None
        rest = [p for p in self.key.split("_") if not re.fullmatch(r"(mem|proxy)-.*", p)]
        return fam + (f" ({' '.join(rest)})" if rest else "")

    def short(self) -> str:
        """The header without its size: the level of a mem set, ``<proxy> <level>``, ``random``, ..."""
        parts = [p for p in self.key.split("_") if not re.fullmatch(r"n\d+", p)]
        if self.kind in ("mem", "proxy") and self.mem_level:
            head = self.mem_level if self.kind == "mem" else f"{self.mem_proxy} {self.mem_level}"
            rest = [p for p in parts if not re.fullmatch(r"(mem|proxy)-.*", p)]
            return " ".join([head, *rest])
        return " ".join(parts) or self.key


def nominal_size(key: str) -> int | None:
    """The ``n`` of a forget-set name (``mem-mix_n90`` -> 90): the size asked for."""
    m = re.search(r"(?:^|_)n(\d+)(?:_|$)", key)
    return int(m.group(1)) if m else None


def _headers(cols: Sequence[Column]) -> None:
    """``<short> (n=77)``; the full key instead of the short name where two would read alike."""
    shorts = [c.short() for c in cols]
    for c, short in zip(cols, shorts):
        base = short if shorts.count(short) == 1 else c.key
        sizes = sorted(c.sizes) or ([c.num_forget] if c.num_forget is not None else [])
        n = "" if not sizes else f" (n={sizes[0]})" if len(sizes) == 1 else f" (n={sizes[0]}–{sizes[-1]})"
        c.header = base + n


@dataclass
class SeedResult:
    seed: int
    run: Run
    retrain: Run | None  # the reference (the run itself for a retrain run)
    value: float | None  # None when there is no usable retrain
    problem: str | None = None


@dataclass
class Cell:
    """One (method tag, forget set) cell: the per-seed scores and their mean and interval."""

    row: str  # the row id (method tag, plus " @<recipe>" when the runs start from several recipes)
    method: str
    column: str  # Column.key
    results: list[SeedResult] = field(default_factory=list)  # sorted by seed
    notes: list[str] = field(default_factory=list)
    mean: float | None = None
    half: float | None = None  # half-width of the interval; None with one seed

    @property
    def seeds(self) -> list[int]:
        return [s.seed for s in self.results]

    @property
    def values(self) -> list[float]:
        return [s.value for s in self.results if s.value is not None]

    @property
    def scored_seeds(self) -> list[int]:
        return [s.seed for s in self.results if s.value is not None]

    @property
    def missing_retrain(self) -> list[int]:
        return [s.seed for s in self.results if s.retrain is None]

    @property
    def collapsed_seeds(self) -> list[int]:
        return [s.seed for s in self.results if s.run.collapsed]

    def means(self) -> dict[str, float]:
        """Mean over seeds (all of the cell's runs) of retain, forget, test accuracy and MIA."""
        out = {}
        for key in ("retain", "forget", "test", "val"):
            vals = [s.run.accuracy.get(key, math.nan) for s in self.results]
            out[key] = float(np.mean(vals)) if vals else math.nan
        vals = [s.run.mia_value for s in self.results]
        out["mia"] = float(np.mean(vals)) if vals else math.nan
        return out


@dataclass
class RowInfo:
    """One row: a method tag from one pretraining recipe, its hyperparameters and label."""

    row: str
    method: str
    method_tag: str
    pretrained: str
    recipe: str | None
    name: str  # the method's paper name
    hparams: dict
    label: str = ""
    hidden: list[str] = field(default_factory=list)  # differing hyperparameters the label leaves out


@dataclass
class Report:
    metric: Metric
    dataset: str
    arch: str
    root: str  # where the runs were found
    filters: Filters
    no_aug: bool
    columns: list[Column]
    rows: list[tuple[str, str]]  # (method_tag, method) of the score table
    cells: dict[tuple[str, str], Cell]  # (row, column) -> cell, retrain rows included
    ref_rows: list[tuple[str, str]]  # retrain rows (detail table only)
    pretrained: dict[str, str]  # row -> the pretraining recipe of its start model (SGD, SAM-..., ...)
    notes: list[str]
    skipped: list[str]  # metrics.json files that are not unlearning runs
    n_runs: int
    info: dict[str, RowInfo] = field(default_factory=dict)  # row -> its method, hyperparameters, label
    shared: dict[str, list[str]] = field(default_factory=dict)  # paper name -> hyperparameters all its rows share
    selection: dict | None = None  # --select: what was chosen and why (results.select)

    def label(self, row: str) -> str:
        info = self.info.get(row)
        return info.label if info is not None and info.label else row

    @property
    def single_seed(self) -> bool:
        """Every scored cell of the table has one seed (no interval anywhere)."""
        ns = [len(c.values) for c in self.cells.values() if c.method.lower() != "retrain" and c.values]
        return bool(ns) and max(ns) == 1


class RetrainIndex:
    """The retrain runs of a selection, by (dataset, arch, forget-set sha256, seed, recipe) and by
    (dataset, arch, forget-set name, seed, recipe), the recipe being the pretraining recipe of the
    start model each retrain stands for. ``notes`` collects what pairing met."""

    def __init__(self, runs: Sequence[Run]):
        self.by_sha: dict[tuple, list[Run]] = {}
        self.by_name: dict[tuple, list[Run]] = {}
        self.notes: list[str] = []
        for r in runs:
            if r.is_retrain:
                if r.sha:
                    self.by_sha.setdefault((r.dataset, r.arch, r.sha, r.seed, r.recipe), []).append(r)
                self.by_name.setdefault((r.dataset, r.arch, r.forget_set, r.seed, r.recipe), []).append(r)

    def _others(self, u: Run) -> list[Run]:
        """Retrain runs of ``u``'s forget set and seed for other recipes."""
        return [r for (d, a, name, seed, rec), rs in self.by_name.items() for r in rs
                if (d, a, name, seed) == (u.dataset, u.arch, u.forget_set, u.seed) and rec != u.recipe]

    def reference(self, u: Run) -> tuple[Run | None, str | None]:
        """``(retrain run, None)``, or ``(None, why)`` (``why`` None when there simply is none).
        Several matching retrain runs are a :class:`UserError` naming them and ``--retrain``."""
        cands: list[Run] = []
        if u.sha:
            cands = self.by_sha.get((u.dataset, u.arch, u.sha, u.seed, u.recipe), [])
        if not cands:
            named = self.by_name.get((u.dataset, u.arch, u.forget_set, u.seed, u.recipe), [])
            cands = [r for r in named if not (u.sha and r.sha and r.sha != u.sha)]
            if named and not cands:
                return None, (f"seed {u.seed}: the retrain run {named[0].path} used another file for "
                              f"forget set {u.forget_set} (sha256 differs)")
        if not cands:
            others = self._others(u)
            if others:
                return None, (f"seed {u.seed}: no retrain for the pretraining recipe {u.pretrained} (retrain runs "
                              f"exist for {', '.join(sorted({str(r.pretrained) for r in others}))}; run "
                              f"main_forget.py --unlearn retrain --mask <the start model>)")
            return None, None
        if len(cands) > 1:
            raise UserError(f"forget set {u.forget_set}, seed {u.seed}, pretraining {u.pretrained}: "
                            f"{len(cands)} retrain runs match ({', '.join(sorted(r.method_tag for r in cands))}); "
                            f"choose the reference with --retrain TAG")
        return cands[0], None


def recipe_rows(runs: Sequence[Run]) -> tuple[list[Run], dict[str, str], list[str]]:
    """One row per method tag and pretraining recipe: each run's ``row`` is its method tag, plus
    `` @<recipe label>`` when the runs start from several recipes. Returns the runs,
    ``row -> recipe label`` and a note."""
    labels: dict[str | None, str] = {}
    for r in runs:
        if r.recipe not in labels:
            base = r.pretrained or "unknown"
            taken = sum(1 for v in labels.values() if v == base or v.startswith(base + " ("))
            labels[r.recipe] = base if not taken else f"{base} ({taken + 1})"
    several = len(labels) > 1
    out = [replace(r, row=f"{r.method_tag} @{labels[r.recipe]}" if several else r.method_tag) for r in runs]
    pretrained = {r.row: labels[r.recipe] for r in out}
    note = [f"runs start from {len(labels)} pretraining recipes ({', '.join(labels.values())}); each row is "
            f"scored against the retrain of its own recipe (the pretrained column)"] if several else []
    return out, pretrained, note


def score_seed(r: Run, index: RetrainIndex, metric: Metric) -> SeedResult:
    """``r`` (not a retrain run) scored against its retrain reference."""
    ref, problem = index.reference(r)
    value = None
    if ref is not None:
        try:
            value = float(metric.score(r, ref))
            if math.isnan(value):
                problem, value = f"seed {r.seed}: {metric.title} is NaN (missing accuracy or MIA)", None
        except (KeyError, ValueError) as e:
            problem = f"seed {r.seed}: cannot score ({' '.join(str(e).split())})"
    return SeedResult(r.seed, r, ref, value, problem)


def fill_cells(runs: Sequence[Run], index: RetrainIndex, metric: Metric) -> dict[tuple[str, str], Cell]:
    """One cell per (method tag, column): every seed scored (retrain runs are their own reference),
    then the mean and interval over seeds. A second run of one seed in a cell is noted, not used."""
    cells: dict[tuple[str, str], Cell] = {}
    for r in runs:
        row = r.row or r.method_tag
        cell = cells.setdefault((row, r.column), Cell(row, r.method, r.column))
        dup = [s for s in cell.results if s.seed == r.seed]
        if dup:
            cell.notes.append(f"seed {r.seed}: two runs ({dup[0].run.path}, {r.path}); used the first")
        elif r.is_retrain:
            cell.results.append(SeedResult(r.seed, r, r, None))
        else:
            cell.results.append(score_seed(r, index, metric))
    for cell in cells.values():
        cell.results.sort(key=lambda s: s.seed)
        if cell.values:
            cell.mean, cell.half = mean_ci(cell.values, CONFIDENCE)
        cell.notes.extend(s.problem for s in cell.results if s.problem)
    return cells


def order_rows_and_columns(runs: Sequence[Run]) -> tuple[list[Column], list[tuple[str, str]],
                                                          list[tuple[str, str]]]:
    """``(columns, rows, reference rows)``: columns by kind, size and level (low, mid, high, mix),
    each with its header; rows (row id, method) with the original model first, then the registry's
    order, RUM last, a method's start models together (SGD first); the retrain rows apart."""
    columns: dict[str, Column] = {}
    sizes: dict[str, set[int]] = {}
    rows: dict[str, Run] = {}
    ref_rows: dict[str, Run] = {}
    for r in runs:
        col = r.column
        if col not in columns:
            columns[col] = Column(col, r.kind, (r.mem_level or None) and r.mem_level.lower(),
                                  r.mem_proxy, r.group_index, r.num_forget)
        if r.num_forget is not None:
            sizes.setdefault(col, set()).add(r.num_forget)
        (ref_rows if r.is_retrain else rows).setdefault(r.row or r.method_tag, r)
    for key, c in columns.items():
        c.sizes = tuple(sorted(sizes.get(key, ())))
    cols = sorted(columns.values(), key=Column.sort_key)
    _headers(cols)

    def order(kv: tuple[str, Run]) -> tuple:
        r = kv[1]
        name = display_name(r.method, r.hparams)
        return (method_rank(r.method), name, r.method_tag, r.pretrained != "SGD", str(r.pretrained), kv[0])

    row_list = [(k, r.method) for k, r in sorted(rows.items(), key=order)]
    return cols, row_list, [(k, r.method) for k, r in sorted(ref_rows.items(), key=order)]


def row_info(runs: Sequence[Run], pretrained: dict[str, str]) -> tuple[dict[str, RowInfo], dict[str, list[str]]]:
    """Every row's hyperparameters (those all its runs agree on) and label, and the hyperparameters
    each method's rows share (:func:`results.labels.label_rows`)."""
    by_row: dict[str, list[Run]] = {}
    for r in runs:
        by_row.setdefault(r.row or r.method_tag, []).append(r)
    info: dict[str, RowInfo] = {}
    for row, rs in by_row.items():
        r0 = rs[0]
        hp = common_hparams([run_hparams(r.method, r.hparams, r.sam, r.rum) for r in rs])
        info[row] = RowInfo(row, r0.method, r0.method_tag, pretrained.get(row, ""), r0.recipe,
                            display_name(r0.method, r0.hparams), hp)
    labels = label_rows([RowSpec(i.row, i.name, i.pretrained, i.hparams, i.method_tag) for i in info.values()])
    for row, i in info.items():
        i.label = labels.labels[row]
        i.hidden = labels.hidden.get(row, [])
    return info, labels.shared


def coverage_notes(runs: Sequence[Run], metric: Metric) -> list[str]:
    """Notes when the selection holds only retrain runs, or no retrain run at all."""
    notes = []
    if not any(not r.is_retrain for r in runs):
        notes.append(f"only retrain runs were selected: retrain is the reference ({metric.title} 1 by definition)")
    if not any(r.is_retrain for r in runs):
        notes.append(f"no retrain runs among the selected runs: {metric.title} needs a retrain reference of "
                     f"the same forget set and seed (main_forget.py --unlearn retrain)")
    return notes


def build_report(runs: Sequence[Run], metric: Metric, *, root: str = "", filters: Filters | None = None,
                 no_aug: bool = False, skipped: Sequence[str] = ()) -> Report:
    """Pair every run with its retrain reference and aggregate per (row, forget set)."""
    runs, pretrained, notes = recipe_rows(runs)
    index = RetrainIndex(runs)
    cells = fill_cells(runs, index, metric)
    cols, rows, ref_rows = order_rows_and_columns(runs)
    info, shared = row_info(runs, pretrained)
    notes = notes + index.notes + coverage_notes(runs, metric)
    r0 = runs[0]
    return Report(metric, r0.dataset, r0.arch, str(root), filters or Filters(), no_aug, cols, rows, cells,
                  ref_rows, pretrained, list(dict.fromkeys(notes)), list(skipped), len(runs), info, shared)
