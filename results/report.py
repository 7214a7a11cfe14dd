"""ToW / ToW-MIA tables over unlearning runs, and the entanglement score of a forget set.

The code behind ``analysis.py`` and ``analysis_mia.py`` (DESIGN.md §7.2, §8; rum-spec §4-5;
upstream-spec §7.4):

1. **Discovery.** Every ``metrics.json`` under ``--runs`` (default ``<ckpts>/unlearn``) that has the
   keys of an unlearning run (written by ``main_forget.py`` / ``main_rum.py`` at
   ``<ckpts>/unlearn/<forget_set>/<method_tag>/seed<seed>/``) is one :class:`Run`; other JSON files
   are skipped with a warning.
2. **Selection.** Flags of the original README's §4 command choose rows and columns: ``--unlearn``
   (method name, case-insensitive; ``raw`` and ``original`` are the same), ``--mem`` (memorization
   level of mem and proxy forget sets), ``--mem_proxy`` (proxy forget sets of that proxy),
   ``--num_indexes_to_replace`` (forget-set size), ``--group_index`` (ES group). ``--dataset`` and
   ``--arch`` filter only when given on the command line: the parser's defaults (cifar10, resnet18)
   would otherwise hide every other run. One table holds one dataset and one architecture; a mix is
   refused. ``--unlearn`` selects rows only: retrain runs are always kept as references.
3. **Pairing.** Every non-retrain run is scored against the retrain run of the same dataset,
   architecture, forget set (its sha256; the forget-set name when a sha is missing) and seed.
4. **Aggregation.** Per (method tag, forget set): mean over seeds and the half-width of the 95%
   Student-t interval (:func:`evaluation.metrics.mean_ci`). Forget sets whose name carries a seed
   (random, class, shuffled) are pooled over seeds into one column, named without the seed.
5. **Output.** Markdown (printed, and ``<stem>.md``), CSV (one line per method and forget set,
   fractions) and JSON (everything, per seed) under ``--out`` (default ``<ckpts>/analysis``), plus
   ``<stem>.png`` when matplotlib is installed.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from utils.errors import UserError
from utils.io import atomic_write_bytes, atomic_write_json
from evaluation.metrics import mean_ci, tow, tow_mia

__all__ = [
    "METRICS", "Run", "Filters", "Report", "discover", "explicit_flags", "select", "check_single",
    "build_report", "render_markdown", "render_csv", "report_json", "plot", "run_analysis",
    "embeddings", "run_entanglement",
]

CONFIDENCE = 0.95
LEVEL_ORDER = {"low": 0, "mid": 1, "high": 2, "mix": 3}
KIND_ORDER = {"mem": 0, "proxy": 1, "es": 2, "random": 3, "class": 4}
ORIGINAL = ("original", "raw")
MIA_ATTACK = "confidence"


def _tow(u: "Run", r: "Run") -> float:
    return tow(u.accuracy, r.accuracy)


def _tow_mia(u: "Run", r: "Run") -> float:
    return tow_mia({"mia": u.mia_value, **u.accuracy}, {"mia": r.mia_value, **r.accuracy})


@dataclass(frozen=True)
class Metric:
    name: str  # file stem and JSON key: tow | tow_mia
    title: str  # ToW | ToW-MIA
    formula: str
    score: Callable[["Run", "Run"], float]


METRICS: dict[str, Metric] = {
    "tow": Metric("tow", "ToW", "(1-|FA_u-FA_r|)(1-|RA_u-RA_r|)(1-|TA_u-TA_r|)", _tow),
    "tow_mia": Metric("tow_mia", "ToW-MIA", "(1-|MIA_u-MIA_r|)(1-|RA_u-RA_r|)(1-|TA_u-TA_r|), "
                      "MIA = the confidence attack's MIA-efficacy", _tow_mia),
}


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------

REQUIRED = ("method", "method_tag", "dataset", "arch", "seed", "forget_set", "accuracy")


@dataclass
class Run:
    """One unlearning (or retrain, or original-model) run, read from its ``metrics.json``."""

    path: Path  # the run directory
    method: str
    method_tag: str
    dataset: str
    arch: str
    seed: int
    forget_set: str
    sha: str | None
    kind: str | None
    mem_level: str | None
    mem_proxy: str | None
    group_index: int | None
    num_forget: int | None
    accuracy: dict[str, float]
    mia: dict[str, float]
    collapsed: bool
    model_name: str | None = None  # the start model's run name (SGD vs SAM pretraining, ...)

    @property
    def is_retrain(self) -> bool:
        return self.method.lower() == "retrain"

    @property
    def is_original(self) -> bool:
        return self.method.lower() in ORIGINAL

    @property
    def mia_value(self) -> float:
        v = self.mia.get(MIA_ATTACK)
        return math.nan if v is None else float(v)

    @property
    def column(self) -> str:
        """The forget-set column: its name without the dataset prefix and without seed parts."""
        return column_label(self.forget_set, self.dataset)


def column_label(name: str, dataset: str) -> str:
    parts = str(name).split("_")
    if len(parts) > 1 and parts[0].lower() == str(dataset).lower():
        parts = parts[1:]
    kept = [p for p in parts if not re.fullmatch(r"seed\d+", p)]
    return "_".join(kept) or str(name)


def _canon_dataset(name: Any) -> str:
    from utils.data import canonical_dataset

    try:
        return canonical_dataset(str(name))
    except UserError:
        return str(name).lower()


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def load_run(path: Path) -> Run:
    """Read one ``metrics.json``; raises ``ValueError`` when it is not an unlearning run's."""
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"unreadable ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    if not isinstance(m, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in REQUIRED if k not in m]
    if missing:
        raise ValueError(f"not an unlearning run's metrics (lacks {', '.join(missing)})")
    acc = m["accuracy"]
    if not isinstance(acc, dict):
        raise ValueError("'accuracy' is not an object")
    mia = m.get("mia") or {}
    if not isinstance(mia, dict):
        raise ValueError("'mia' is not an object")
    try:
        return Run(
            path=path.parent, method=str(m["method"]), method_tag=str(m["method_tag"]),
            dataset=_canon_dataset(m["dataset"]), arch=str(m["arch"]).lower(), seed=int(m["seed"]),
            forget_set=str(m["forget_set"]), sha=_opt_str(m.get("forget_set_sha256")) or None,
            kind=_opt_str(m.get("forget_kind")), mem_level=_opt_str(m.get("mem_level")),
            mem_proxy=_opt_str(m.get("mem_proxy")), group_index=_opt_int(m.get("group_index")),
            num_forget=_opt_int(m.get("num_forget")),
            accuracy={k: (math.nan if v is None else float(v)) for k, v in acc.items()},
            mia={k: (math.nan if v is None else float(v)) for k, v in mia.items()
                 if not isinstance(v, (dict, list))},
            collapsed=bool(m.get("collapsed", False)),
            model_name=_opt_str(m.get("model_name")),
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad value ({' '.join(str(e).split())[:120]})") from None


def discover(root: str | Path) -> tuple[list[Run], list[str]]:
    """All runs under ``root`` (sorted by path) and one line per skipped ``metrics.json``."""
    root = Path(root)
    runs, skipped = [], []
    if not root.is_dir():
        return runs, skipped
    for p in sorted(root.rglob("metrics.json")):
        try:
            runs.append(load_run(p))
        except ValueError as e:
            skipped.append(f"{p}: {e}")
    return runs, skipped


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------

def explicit_flags(argv: Sequence[str] | None, prog: str | None = None) -> set[str]:
    """Which of ``--dataset`` / ``--arch`` were given on the command line (their parser defaults,
    cifar10 and resnet18, must not filter): the arguments are parsed a second time with those
    defaults set to None, so abbreviations and ``--flag=value`` count as argparse counts them."""
    from arg_parser import build_parser

    p = build_parser(prog)
    watched = ("dataset", "arch")
    p.set_defaults(**{d: None for d in watched})
    ns, _ = p.parse_known_args(argv)
    return {d for d in watched if getattr(ns, d) is not None}


@dataclass
class Filters:
    dataset: str | None = None
    arch: str | None = None
    unlearn: str | None = None
    mem: str | None = None
    mem_proxy: str | None = None
    num_forget: int | None = None
    group_index: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, explicit: Iterable[str]) -> "Filters":
        explicit = set(explicit)
        return cls(
            dataset=args.dataset if "dataset" in explicit else None,
            arch=str(args.arch).lower() if "arch" in explicit else None,
            unlearn=args.unlearn,
            mem=args.mem,
            mem_proxy=None if args.mem_proxy is None else str(args.mem_proxy).lower(),
            num_forget=args.num_indexes_to_replace,
            group_index=args.group_index,
        )

    def flags(self) -> str:
        out = []
        for flag, v in (("--dataset", self.dataset), ("--arch", self.arch), ("--unlearn", self.unlearn),
                        ("--mem", self.mem), ("--mem_proxy", self.mem_proxy),
                        ("--num_indexes_to_replace", self.num_forget), ("--group_index", self.group_index)):
            if v is not None:
                out.append(f"{flag} {v}")
        return " ".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _size_matches(run: Run, n: int) -> bool:
    if run.num_forget == n:
        return True
    return re.search(rf"(^|_)n{n}(_|$)", run.forget_set) is not None


def _method_matches(run: Run, unlearn: str) -> bool:
    want = unlearn.lower()
    have = run.method.lower()
    if want in ORIGINAL:
        return have in ORIGINAL
    return have == want


def select(runs: Sequence[Run], f: Filters) -> list[Run]:
    """The runs the filters keep. Retrain runs pass the ``--unlearn`` filter (they are the
    references); every other filter applies to them as well."""
    out = []
    for r in runs:
        if f.dataset is not None and r.dataset != f.dataset:
            continue
        if f.arch is not None and r.arch != f.arch:
            continue
        if f.unlearn is not None and not r.is_retrain and not _method_matches(r, f.unlearn):
            continue
        if f.mem is not None and (r.mem_level or "").lower() != f.mem:
            continue
        if f.mem_proxy is not None and (r.mem_proxy or "").lower() != f.mem_proxy:
            continue
        if f.num_forget is not None and not _size_matches(r, f.num_forget):
            continue
        if f.group_index is not None and r.group_index != f.group_index:
            continue
        out.append(r)
    return out


def check_single(runs: Sequence[Run]) -> None:
    """One dataset and one architecture per table; a mix is a :class:`UserError`."""
    for what, flag in (("dataset", "--dataset"), ("arch", "--arch")):
        counts: dict[str, int] = {}
        for r in runs:
            counts[getattr(r, what)] = counts.get(getattr(r, what), 0) + 1
        if len(counts) > 1:
            listing = ", ".join(f"{k} ({v} runs)" for k, v in sorted(counts.items()))
            noun = "datasets" if what == "dataset" else "architectures"
            raise UserError(f"the selected runs mix {noun}: {listing}; one table holds one {what}: "
                            f"choose with {' or '.join(f'{flag} {k}' for k in sorted(counts))}")


def _describe(runs: Sequence[Run]) -> str:
    def uniq(xs: Iterable[Any]) -> str:
        vals = sorted({str(x) for x in xs})
        return ", ".join(vals[:8]) + (", ..." if len(vals) > 8 else "")

    return (f"datasets {uniq(r.dataset for r in runs)}; archs {uniq(r.arch for r in runs)}; "
            f"methods {uniq(r.method for r in runs)}; forget sets {uniq(r.column for r in runs)}")


# --------------------------------------------------------------------------------------------
# Pairing and aggregation
# --------------------------------------------------------------------------------------------

@dataclass
class Column:
    key: str
    kind: str | None
    mem_level: str | None
    mem_proxy: str | None
    group_index: int | None
    num_forget: int | None

    def sort_key(self) -> tuple:
        group = self.group_index if self.group_index is not None else -2
        return (KIND_ORDER.get(self.kind or "", len(KIND_ORDER)), self.kind or "", self.mem_proxy or "",
                self.num_forget or 0, "shuffle" in self.key.split("_"),
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


@dataclass
class SeedResult:
    seed: int
    run: Run
    retrain: Run | None
    value: float | None  # None when there is no usable retrain
    problem: str | None = None


@dataclass
class Cell:
    row: str
    method: str
    column: str
    results: list[SeedResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mean: float | None = None
    half: float | None = None

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
class Report:
    metric: Metric
    dataset: str
    arch: str
    root: str
    filters: Filters
    no_aug: bool
    columns: list[Column]
    rows: list[tuple[str, str]]  # (method_tag, method) of the score table
    cells: dict[tuple[str, str], Cell]  # (row, column) -> cell, retrain rows included
    ref_rows: list[tuple[str, str]]  # retrain rows (detail table only)
    notes: list[str]
    skipped: list[str]
    n_runs: int


def _seeds(xs: Iterable[int]) -> str:
    return ", ".join(str(s) for s in sorted(xs))


def _row_rank(method: str) -> int:
    m = method.lower()
    if m in ORIGINAL:
        return 0
    if m == "rum":
        return 2
    return 1


def build_report(runs: Sequence[Run], metric: Metric, *, root: str = "", filters: Filters | None = None,
                 no_aug: bool = False, skipped: Sequence[str] = ()) -> Report:
    """Pair every run with its retrain reference and aggregate per (method tag, forget set)."""
    filters = filters or Filters()
    notes: list[str] = []
    # Unlearning from several pretrained models (SGD vs SAM, other recipes): one row per method and
    # model recipe; the seed is not part of the recipe, so seeds still aggregate in one row.
    recipe = {r.model_name: re.sub(r"_seed\d+$", "", r.model_name) for r in runs if r.model_name}
    starts = {recipe[r.model_name] for r in runs if not r.is_retrain and r.model_name}
    if len(starts) > 1:
        runs = [r if r.is_retrain or not r.model_name
                else replace(r, method_tag=f"{r.method_tag} @{recipe[r.model_name]}") for r in runs]
        notes.append(f"runs start from {len(starts)} pretrained models; each row is tagged '@<model>'")
    # retrain index: (dataset, arch, sha, seed) and (dataset, arch, name, seed) -> runs
    by_sha: dict[tuple, list[Run]] = {}
    by_name: dict[tuple, list[Run]] = {}
    for r in runs:
        if r.is_retrain:
            if r.sha:
                by_sha.setdefault((r.dataset, r.arch, r.sha, r.seed), []).append(r)
            by_name.setdefault((r.dataset, r.arch, r.forget_set, r.seed), []).append(r)

    def reference(u: Run) -> tuple[Run | None, str | None]:
        cands: list[Run] = []
        if u.sha:
            cands = by_sha.get((u.dataset, u.arch, u.sha, u.seed), [])
        if not cands:
            named = by_name.get((u.dataset, u.arch, u.forget_set, u.seed), [])
            cands = [r for r in named if not (u.sha and r.sha and r.sha != u.sha)]
            if named and not cands:
                return None, (f"seed {u.seed}: the retrain run {named[0].path} used another file for "
                              f"forget set {u.forget_set} (sha256 differs)")
        if not cands:
            return None, None
        if len(cands) > 1:
            notes.append(f"{len(cands)} retrain runs for forget set {u.forget_set}, seed {u.seed}: "
                         f"used {cands[0].path}")
        return cands[0], None

    columns: dict[str, Column] = {}
    cells: dict[tuple[str, str], Cell] = {}
    rows: dict[str, str] = {}
    ref_rows: dict[str, str] = {}
    for r in runs:
        col = r.column
        if col not in columns:
            columns[col] = Column(col, r.kind, (r.mem_level or None) and r.mem_level.lower(),
                                  r.mem_proxy, r.group_index, r.num_forget)
        (ref_rows if r.is_retrain else rows).setdefault(r.method_tag, r.method)
        cell = cells.setdefault((r.method_tag, col), Cell(r.method_tag, r.method, col))
        dup = [s for s in cell.results if s.seed == r.seed]
        if dup:
            cell.notes.append(f"seed {r.seed}: two runs ({dup[0].run.path}, {r.path}); used the first")
            continue
        if r.is_retrain:
            cell.results.append(SeedResult(r.seed, r, r, None))
            continue
        ref, problem = reference(r)
        value = None
        if ref is not None:
            try:
                value = float(metric.score(r, ref))
                if math.isnan(value):
                    problem, value = f"seed {r.seed}: {metric.title} is NaN (missing accuracy or MIA)", None
            except (KeyError, ValueError) as e:
                problem = f"seed {r.seed}: cannot score ({' '.join(str(e).split())})"
        cell.results.append(SeedResult(r.seed, r, ref, value, problem))
    for cell in cells.values():
        cell.results.sort(key=lambda s: s.seed)
        if cell.values:
            cell.mean, cell.half = mean_ci(cell.values, CONFIDENCE)
        cell.notes.extend(s.problem for s in cell.results if s.problem)

    cols = sorted(columns.values(), key=Column.sort_key)
    row_list = sorted(rows.items(), key=lambda kv: (_row_rank(kv[1]), kv[1].lower(), kv[0]))
    if not any(not r.is_retrain for r in runs):
        notes.append(f"only retrain runs were selected: retrain is the reference ({metric.title} 1 by definition)")
    if not any(r.is_retrain for r in runs):
        notes.append(f"no retrain runs among the selected runs: {metric.title} needs a retrain reference of "
                     f"the same forget set and seed (main_forget.py --unlearn retrain)")
    r0 = runs[0]
    return Report(metric, r0.dataset, r0.arch, str(root), filters, no_aug, cols, row_list, cells,
                  sorted(ref_rows.items()), list(dict.fromkeys(notes)), list(skipped), len(runs))


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

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
        w("| method | " + " | ".join(_md_escape(c.key) for c in rep.columns) + " |\n")
        w("|---|" + "---|" * len(rep.columns) + "\n")
        for tag, _ in rep.rows:
            w(f"| {_md_escape(tag)} | "
              + " | ".join(_md_escape(cell_text(rep.cells.get((tag, c.key)))) for c in rep.columns) + " |\n")
    else:
        w("_No unlearned runs to score._\n")
    w("\n## Detail (means over seeds)\n\n")
    w(f"Accuracies and MIA-efficacy ({MIA_ATTACK} attack) in %, averaged over every seed of the cell.\n\n")
    w(f"| method | forget set | seeds | retain acc | forget acc | test acc | MIA-efficacy | {m.title} |\n")
    w("|---|---|---|---|---|---|---|---|\n")
    for tag, _method in list(rep.rows) + list(rep.ref_rows):
        is_ref = (tag, _method) in rep.ref_rows
        for c in rep.columns:
            cell = rep.cells.get((tag, c.key))
            if cell is None:
                continue
            mm = cell.means()
            score = "reference" if is_ref else (f"{cell.mean:.3f}" if cell.mean is not None else "—")
            w(f"| {_md_escape(tag)} | {_md_escape(c.key)} | {_seeds(cell.seeds)} | {_pct(mm['retain'])} | "
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


CSV_FIELDS = ("method", "method_tag", "forget_set", "forget_kind", "mem_level", "mem_proxy", "group_index",
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
                method, tag, c.key, c.kind or "", c.mem_level or "", c.mem_proxy or "",
                "" if c.group_index is None else c.group_index, "" if c.num_forget is None else c.num_forget,
                " ".join(str(s) for s in cell.seeds), len(cell.values) if not is_ref else "",
                _fmt_num(cell.mean), _fmt_num(cell.half), _fmt_num(lo), _fmt_num(hi),
                _fmt_num(mm["retain"]), _fmt_num(mm["forget"]), _fmt_num(mm["test"]), _fmt_num(mm["mia"]),
                "" if is_ref else " ".join(str(s) for s in cell.missing_retrain),
                " ".join(str(s) for s in cell.collapsed_seeds),
                "reference" if is_ref else "; ".join(cell.notes),
            ])
    return out.getvalue()


def _jnum(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def report_json(rep: Report) -> dict[str, Any]:
    m = rep.metric
    cells = []
    for (tag, col), cell in sorted(rep.cells.items()):
        is_ref = cell.method.lower() == "retrain"
        cells.append({
            "method": cell.method, "method_tag": tag, "forget_set": col,
            "reference": is_ref,
            "seeds": cell.seeds, "n": len(cell.values),
            "mean": _jnum(cell.mean), "half_width": _jnum(cell.half),
            "text": "reference" if is_ref else cell_text(cell),
            "missing_retrain_seeds": [] if is_ref else cell.missing_retrain,
            "collapsed_seeds": cell.collapsed_seeds,
            "means": {k: _jnum(v) for k, v in cell.means().items()},
            "notes": cell.notes,
            "per_seed": [{
                "seed": s.seed, "value": _jnum(s.value), "run_dir": str(s.run.path),
                "retrain_dir": None if s.retrain is None else str(s.retrain.path),
                "forget_set": s.run.forget_set, "forget_set_sha256": s.run.sha,
                "accuracy": {k: _jnum(v) for k, v in s.run.accuracy.items()},
                "mia": {k: _jnum(v) for k, v in s.run.mia.items()},
                "collapsed": s.run.collapsed,
            } for s in cell.results],
        })
    return {
        "metric": m.name, "title": m.title, "formula": m.formula, "confidence": CONFIDENCE,
        "dataset": rep.dataset, "arch": rep.arch, "runs_root": rep.root, "filters": rep.filters.as_dict(),
        "no_aug": rep.no_aug, "n_runs": rep.n_runs,
        "columns": [c.__dict__ for c in rep.columns],
        "rows": [{"method_tag": t, "method": mth} for t, mth in rep.rows],
        "reference_rows": [{"method_tag": t, "method": mth} for t, mth in rep.ref_rows],
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


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------

def run_analysis(metric_name: str, prog: str, argv: Sequence[str] | None = None) -> int:
    """The whole of ``analysis.py`` / ``analysis_mia.py``. Raises :class:`UserError` on bad input."""
    from arg_parser import parse_args

    args = parse_args(argv, prog=prog)
    metric = METRICS[metric_name]
    if args.es:
        if metric_name != "tow":
            raise UserError("--es: the entanglement score is computed by analysis.py --es")
        return run_entanglement(args)
    explicit = explicit_flags(argv, prog)
    root = Path(args.runs) if args.runs else Path(args.ckpts) / "unlearn"
    out_dir = Path(args.out) if args.out else Path(args.ckpts) / "analysis"
    runs, skipped = discover(root)
    for s in skipped:
        print(f"{prog}: warning: skipped {s}", file=sys.stderr)
    if not runs:
        where = "does not exist" if not root.is_dir() else "holds no unlearning run (metrics.json)"
        raise UserError(f"--runs {root}: {where}; unlearning runs are written by main_forget.py under "
                        f"<ckpts>/unlearn/<forget set>/<method>/seed<seed>/")
    filters = Filters.from_args(args, explicit)
    selected = select(runs, filters)
    if not selected:
        raise UserError(f"no run under {root} matches {filters.flags()}; found {len(runs)} runs: {_describe(runs)}")
    if not any(not r.is_retrain for r in selected) and filters.unlearn and filters.unlearn.lower() != "retrain":
        raise UserError(f"no {filters.unlearn} run under {root} matches {filters.flags()}; "
                        f"found {len(runs)} runs: {_describe(runs)}")
    check_single(selected)
    rep = build_report(selected, metric, root=str(root), filters=filters, no_aug=args.no_aug, skipped=skipped)
    md = render_markdown(rep)
    print(md, end="")
    for n in rep.notes:
        if n.startswith("no retrain runs"):
            print(f"{prog}: warning: {n}", file=sys.stderr)
    stem = out_dir / metric.name
    try:
        atomic_write_bytes(stem.with_suffix(".md"), md.encode())
        atomic_write_bytes(stem.with_suffix(".csv"), render_csv(rep).encode())
        atomic_write_json(stem.with_suffix(".json"), report_json(rep))
    except OSError as e:
        raise UserError(f"--out {out_dir}: cannot write the tables ({e.strerror or e})") from None
    written = [stem.with_suffix(s) for s in (".md", ".csv", ".json")]
    try:
        if plot(rep, stem.with_suffix(".png")):
            written.append(stem.with_suffix(".png"))
    except ImportError:
        print(f"{prog}: note: matplotlib is not installed; no plot (pip install matplotlib)", file=sys.stderr)
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


# --------------------------------------------------------------------------------------------
# Entanglement score (analysis.py --es)
# --------------------------------------------------------------------------------------------

def embeddings(model, data, split: str, ids: np.ndarray, *, device, batch_size: int = 512) -> np.ndarray:
    """``model.embed`` (eval mode, no grad, no augmentation, float32) of the examples ``ids``
    of ``split`` (``"train"``: global ids; ``"test"``: test indices); float64 ``[N, D]``."""
    import torch

    from utils.batches import iterate

    x, y = (data.x, data.y) if split == "train" else (data.test_x, data.test_y)
    was_training = model.training
    model.eval()
    chunks = []
    with torch.no_grad():
        for b in iterate(x, y, np.asarray(ids, dtype=np.int64), batch_size, device=device):
            chunks.append(model.embed(b.x).float().cpu())
    model.train(was_training)
    if not chunks:
        return np.zeros((0, int(getattr(model, "embed_dim", 0))), np.float64)
    return torch.cat(chunks).double().numpy()


def _forget_set_for_es(args: argparse.Namespace, data, model_file: Path, device) -> tuple[Any, str, str]:
    """(ForgetSet, its name, its file) from the shared builder: ``--forget_set FILE`` as is, else
    the forget set the flags select (built and saved under ``<ckpts>/forget_sets`` if absent)."""
    from forget_sets.builder import build_forget_set

    fs, path = build_forget_set(args, data, device=device, model_file=model_file)
    return fs, str(fs.manifest.get("name") or Path(path).stem), str(path)


def run_entanglement(args: argparse.Namespace) -> int:
    """``analysis.py --es``: ES of a forget set within its retain set under a model
    (rum-spec §4; ``--es_normalized``: the sharp-unlearn variant, upstream-spec §7.5)."""
    import torch

    from models import build_model
    from trainer.device import prepare_model, resolve_device
    from utils.data import load_data
    from evaluation.entanglement import entanglement_score, entanglement_score_normalized
    from forget_sets.file import sha256_file
    from utils.pretrained import load_into, resolve_model_file

    device = resolve_device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", args.gpu)
    out_dir = Path(args.out) if args.out else Path(args.ckpts) / "analysis"
    model_file = resolve_model_file(args.mask, args)
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    fs, fs_name, fs_file = _forget_set_for_es(args, data, model_file, device)
    if len(fs.forget_ids) == 0 or len(fs.retain_ids) == 0:
        raise UserError(f"forget set {fs_name}: the forget and retain sets must both be non-empty")
    model = build_model(args.arch, data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                        mean=data.mean, std=data.std, imagenet_arch=args.imagenet_arch)
    load_into(model, model_file, arch=args.arch, num_classes=data.num_classes)
    model = prepare_model(model, device)
    bs = max(int(args.batch_size), 512)
    emb_r = embeddings(model, data, "train", fs.retain_ids, device=device, batch_size=bs)
    emb_f = embeddings(model, data, "train", fs.forget_ids, device=device, batch_size=bs)
    es = entanglement_score(emb_r, emb_f)
    es_norm = entanglement_score_normalized(emb_r, emb_f)
    variant = "normalized" if args.es_normalized else "rum"
    value = es_norm if args.es_normalized else es
    label = "ES (normalized, sharp-unlearn)" if args.es_normalized else "ES"
    print(f"{label} of forget set {fs_name} ({len(fs.forget_ids)} forget, {len(fs.retain_ids)} retain) "
          f"under {model_file}: {value:.6g}")
    result = {
        "es": _jnum(float(value)), "variant": variant, "es_rum": _jnum(float(es)),
        "es_normalized": _jnum(float(es_norm)), "forget_set": fs_name, "forget_set_file": fs_file,
        "forget_set_sha256": sha256_file(fs_file), "model_file": str(model_file),
        "dataset": data.name, "arch": args.arch, "num_forget": int(len(fs.forget_ids)),
        "num_retain": int(len(fs.retain_ids)), "embed_dim": int(emb_r.shape[1]), "device": str(device),
    }
    try:
        atomic_write_json(out_dir / "es.json", result)
    except OSError as e:
        raise UserError(f"--out {out_dir}: cannot write es.json ({e.strerror or e})") from None
    print(f"wrote {out_dir / 'es.json'}")
    return 0
