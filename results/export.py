"""The table as CSV, with a fixed schema (fractions, not percent):

* ``<stem>.csv`` (:func:`render_csv`): one line per (row, forget set), retrain rows included:
  the columns of :data:`CSV_FIELDS`, then one column per hyperparameter name of
  :data:`results.labels.HPARAM_FIELDS` (empty where a method has no such setting) and
  ``other_hparams`` (JSON of any other).
* ``<stem>_runs.csv`` (:func:`render_runs_csv`): one line per run: its seed, score, run and retrain
  directories, accuracies, the five MIA attacks, and the same hyperparameter columns.
"""
from __future__ import annotations

import csv
import io
import math

from evaluation.mia import FEATURES
from results.labels import HPARAM_FIELDS, csv_hparams, run_hparams
from results.render import cell_text
from results.table import Report

__all__ = ["CSV_FIELDS", "RUNS_FIELDS", "csv_header", "render_csv", "render_runs_csv"]

CSV_FIELDS = ("method", "method_tag", "pretrained", "forget_set", "label", "paper_name", "header", "forget_kind",
              "mem_level", "mem_proxy", "group_index", "num_forget", "seeds", "n_seeds", "{m}_mean",
              "{m}_half_width", "{m}_low", "{m}_high", "retain", "forget", "test", "mia_confidence",
              "missing_retrain_seeds", "collapsed_seeds", "text", "note")
RUNS_FIELDS = ("method", "method_tag", "pretrained", "label", "paper_name", "forget_set", "column", "forget_kind",
               "mem_level", "mem_proxy", "group_index", "num_forget", "seed", "{m}", "reference", "collapsed",
               "retain", "forget", "test", "val") + tuple(f"mia_{k}" for k in FEATURES) + \
    ("run_dir", "retrain_dir", "problem")


def csv_header(fields: tuple[str, ...], metric: str) -> list[str]:
    return [f.format(m=metric) for f in fields] + list(HPARAM_FIELDS) + ["other_hparams"]


def _num(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else repr(float(v))


def _opt(v: object) -> str:
    return "" if v is None else str(v)


def render_csv(rep: Report) -> str:
    """One line per (row, forget set), retrain rows included (see the module docstring)."""
    out = io.StringIO()
    wr = csv.writer(out, lineterminator="\n")
    wr.writerow(csv_header(CSV_FIELDS, rep.metric.name))
    single = rep.single_seed
    for row, method in list(rep.rows) + list(rep.ref_rows):
        info = rep.info[row]
        for c in rep.columns:
            cell = rep.cells.get((row, c.key))
            if cell is None:
                continue
            mm = cell.means()
            is_ref = method.lower() == "retrain"
            lo = hi = None
            if cell.mean is not None and cell.half is not None:
                lo, hi = cell.mean - cell.half, cell.mean + cell.half
            wr.writerow([
                method, info.method_tag, rep.pretrained.get(row, ""), c.key, info.label, info.name, c.header,
                _opt(c.kind), _opt(c.mem_level), _opt(c.mem_proxy), _opt(c.group_index),
                " ".join(str(n) for n in c.sizes) or _opt(c.num_forget),
                " ".join(str(s) for s in cell.seeds), len(cell.values) if not is_ref else "",
                _num(cell.mean), _num(cell.half), _num(lo), _num(hi),
                _num(mm["retain"]), _num(mm["forget"]), _num(mm["test"]), _num(mm["mia"]),
                "" if is_ref else " ".join(str(s) for s in cell.missing_retrain),
                " ".join(str(s) for s in cell.collapsed_seeds),
                "reference" if is_ref else cell_text(cell, single),
                "reference" if is_ref else "; ".join(cell.notes),
            ] + csv_hparams(info.hparams))
    return out.getvalue()


def render_runs_csv(rep: Report) -> str:
    """One line per run of the table (a second run of one seed in a cell is left out, as in the
    table), retrain runs included; ``<metric>`` is the run's score against its retrain."""
    out = io.StringIO()
    wr = csv.writer(out, lineterminator="\n")
    wr.writerow(csv_header(RUNS_FIELDS, rep.metric.name))
    cols = {c.key: c for c in rep.columns}
    for row, method in list(rep.rows) + list(rep.ref_rows):
        info = rep.info[row]
        for c in rep.columns:
            cell = rep.cells.get((row, c.key))
            for s in cell.results if cell is not None else []:
                r, col = s.run, cols[c.key]
                is_ref = method.lower() == "retrain"
                wr.writerow([
                    method, r.method_tag, rep.pretrained.get(row, ""), info.label, info.name, r.forget_set, c.key,
                    _opt(r.kind), _opt(col.mem_level), _opt(r.mem_proxy), _opt(r.group_index), _opt(r.num_forget),
                    r.seed, _num(s.value), int(is_ref), int(r.collapsed),
                    *(_num(r.accuracy.get(k)) for k in ("retain", "forget", "test", "val")),
                    *(_num(r.mia.get(k)) for k in FEATURES),
                    str(r.path), "" if s.retrain is None or is_ref else str(s.retrain.path), _opt(s.problem),
                ] + csv_hparams(run_hparams(r.method, r.hparams, r.sam, r.rum)))
    return out.getvalue()
