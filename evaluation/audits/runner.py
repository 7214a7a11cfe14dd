"""Applying the audits to run directories: LiRA per run, KLOM per method and forget set,
as :class:`evaluation.audits.report.Record` rows (the relearning attack is
:func:`evaluation.audits.relearn.relearn` on a run's model)."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from evaluation.audits.klom import align_margins, klom, percentiles
from evaluation.audits.lira import lira_scores, logit_confidence, roc_summary
from evaluation.audits.report import Record, Target
from evaluation.audits.shadows import ShadowSet
from utils.errors import UserError

__all__ = ["SPLITS", "load_outputs", "lira_run", "klom_group"]

SPLITS = ("retain", "forget", "val", "test")
Outputs = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def load_outputs(run_dir: Path) -> Outputs:
    """``outputs.npz`` of a run directory: split -> (global ids, logits, labels)."""
    p = Path(run_dir) / "outputs.npz"
    try:
        with np.load(p, allow_pickle=False) as z:
            return {s: (np.asarray(z[f"{s}_ids"], np.int64), np.asarray(z[f"{s}_logits"], np.float32),
                        np.asarray(z[f"{s}_labels"], np.int64)) for s in SPLITS if f"{s}_ids" in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{p}: not a readable outputs file ({type(e).__name__}); rerun that run with --overwrite") \
            from None


def _summary(p: np.ndarray, score: np.ndarray, log_lr: np.ndarray, test_score: np.ndarray,
             level: float) -> dict[str, float]:
    ok = np.isfinite(p)
    lr = log_lr[np.isfinite(log_lr)]
    return {"reject": float(np.mean(p[ok] < level)) if ok.any() else float("nan"),
            **roc_summary(score[ok], test_score), "median_log_lr": float(np.median(lr)) if lr.size else float("nan"),
            "n": float(ok.sum())}


def lira_run(target: Target, outputs: Outputs, shadows: ShadowSet, labels: Mapping[int, str], set_level: str, *,
             level: float = 0.05, test: str = "t") -> tuple[list[Record], dict[str, np.ndarray]]:
    """LiRA on one run: its forget examples are the members, its test split the non-members.

    Returns the records (one for the whole forget set at ``set_level``, and one per memorization
    level when the set holds several, ``labels``: id -> level) and the per-example arrays
    (``ids``, ``p``, ``log_lr``, ``phi``, ``n_out``, ``n_in``) of the forget examples."""
    f_ids, f_logits, f_labels = outputs["forget"]
    t_ids, t_logits, t_labels = outputs["test"]
    f = lira_scores(logit_confidence(f_logits, f_labels), shadows.phi[:, f_ids], shadows.in_mask[:, f_ids],
                    test=test)
    t = lira_scores(logit_confidence(t_logits, t_labels), shadows.test_phi[:, t_ids],
                    np.zeros((len(shadows.seeds), len(t_ids)), bool), test=test)
    recs = [Record("lira", target, set_level, _summary(f["p"], f["score"], f["log_lr"], t["score"], level))]
    ex_levels = np.array([labels.get(int(i), set_level) for i in f_ids], dtype=object)
    for lv in sorted(set(ex_levels) - {set_level}):
        m = ex_levels == lv
        recs.append(Record("lira", target, str(lv),
                           _summary(f["p"][m], f["score"][m], f["log_lr"][m], t["score"], level)))
    examples = {"ids": f_ids, "p": f["p"], "log_lr": f["log_lr"], "phi": logit_confidence(f_logits, f_labels),
                "n_out": f["n_out"], "n_in": f["n_in"]}
    return recs, examples


def _margins(outs: Sequence[Outputs], split: str) -> tuple[np.ndarray, np.ndarray]:
    return align_margins([o[split][0] for o in outs], [logit_confidence(o[split][1], o[split][2]) for o in outs])


def klom_group(target: Target, unlearned: Sequence[Outputs], retrained: Sequence[Outputs],
               labels: Mapping[int, str], set_level: str, fit: str = "gauss",
               seeds: Sequence[int] = ()) -> list[Record]:
    """KLOM of one method on one forget set: ``unlearned`` and ``retrained`` are the outputs of
    its runs and of the retrain runs (one per seed). Percentiles 50/90/99 of the per-example
    KLOM over the forget, retain and validation examples every run has; the forget set is also
    broken down by memorization level when it holds several. ``target`` labels the row;
    ``seeds`` are the seeds of the runs."""
    values: dict[str, float] = {}
    forget_klom = None
    for split in ("forget", "retain", "val"):
        if not all(split in o for o in (*unlearned, *retrained)):
            continue
        ids_u, mu = _margins(unlearned, split)
        ids_r, mr = _margins(retrained, split)
        common = np.intersect1d(ids_u, ids_r)
        k = klom(mu[:, np.searchsorted(ids_u, common)], mr[:, np.searchsorted(ids_r, common)], fit)
        if split == "forget":
            forget_klom = (common, k)
        values.update({f"{split}_{q}": v for q, v in percentiles(k).items()})
    seeds = tuple(sorted(int(s) for s in seeds))
    recs = [Record("klom", target, set_level, values, seeds)]
    if forget_klom is not None:
        ids, k = forget_klom
        lv = np.array([labels.get(int(i), set_level) for i in ids], dtype=object)
        for name in sorted(set(lv) - {set_level}):
            recs.append(Record("klom", target, str(name),
                               {f"forget_{q}": v for q, v in percentiles(k[lv == name]).items()}, seeds))
    return recs
