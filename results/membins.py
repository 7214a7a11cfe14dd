"""Forget accuracy and MIA-efficacy against the memorization score of the forget examples, binned:
the data of the second figure of :mod:`results.figures`.

For every run of a table (retrain runs included, as the reference curve):

1. its ``outputs.npz`` gives the forget examples' global ids, logits and labels (and the retain and
   test outputs the MIA attack is fitted on);
2. the memorization score of each forget example comes from the score file its forget set's
   manifest names (``eval_score_file`` / ``score_file`` and its sha256), looked for beside the
   ckpts tree of the forget-set file and in :func:`utils.paths.score_search_dirs`;
3. per example: correct (argmax = label) and predicted non-member by the confidence attack, the
   SVC of :func:`evaluation.mia.svc_mia` refitted with the run's seed (its mean over the forget
   set is the run's recorded MIA-efficacy).

Per row the examples of all its runs are pooled and binned by score (equal-width bins over
[0, 1], scores outside clipped). Runs without outputs or scores are skipped with a note.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from sklearn.svm import SVC

from evaluation.mia import mia_features
from forget_sets.file import load_forget_set, sha256_file
from memorization.scores import SCORE_KEYS, load_scores, score_key
from results.runs import Run
from results.table import Report
from utils import paths
from utils.errors import UserError

__all__ = ["BinCurve", "MemBins", "confidence_nonmember", "ScoreFinder", "mem_bins"]


@dataclass
class BinCurve:
    row: str
    label: str
    pretrained: str
    reference: bool  # a retrain row
    counts: np.ndarray  # forget examples per bin (all runs pooled)
    forget_acc: np.ndarray  # NaN in an empty bin
    mia: np.ndarray  # fraction predicted non-member by the confidence attack


@dataclass
class MemBins:
    edges: np.ndarray
    curves: list[BinCurve] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    score_files: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        def nums(a: np.ndarray) -> list:
            return [None if not math.isfinite(float(x)) else float(x) for x in a]

        return {"edges": nums(self.edges), "score_files": self.score_files, "notes": self.notes,
                "curves": [{"row": c.row, "label": c.label, "pretrained": c.pretrained, "reference": c.reference,
                            "counts": [int(x) for x in c.counts], "forget_acc": nums(c.forget_acc),
                            "mia_confidence": nums(c.mia)} for c in self.curves]}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confidence_nonmember(out: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """Per forget example: predicted non-member by the confidence attack of
    :func:`evaluation.mia.forget_mia_efficacy` (shadow members = the first ``|test|`` retain
    examples, non-members = the test set; same RNG use, so the mean is the recorded value)."""
    n_test = out["test_labels"].shape[0]
    s_in = mia_features(_softmax(out["retain_logits"][:n_test]), out["retain_labels"][:n_test])["confidence"]
    s_out = mia_features(_softmax(out["test_logits"]), out["test_labels"])["confidence"]
    target = mia_features(_softmax(out["forget_logits"]), out["forget_labels"])["confidence"]
    y = np.concatenate([np.ones(s_in.shape[0], np.int64), np.zeros(s_out.shape[0], np.int64)])
    rng = np.random.RandomState(seed)
    order = rng.permutation(y.shape[0])
    svc_seed = int(rng.randint(np.iinfo(np.int32).max))
    clf = SVC(C=3, gamma="auto", kernel="rbf", random_state=svc_seed)
    clf.fit(np.concatenate([s_in, s_out], axis=0)[order], y[order])
    return clf.predict(target) == 0


class ScoreFinder:
    """Memorization scores of a forget set's manifest, found once per score file."""

    def __init__(self, ckpts: Iterable[str | Path]):
        self.ckpts = [Path(c) for c in ckpts]
        self.cache: dict[str, tuple[Path, np.ndarray] | str] = {}

    def _manifest(self, run: Run) -> dict:
        cands = [Path(run.forget_set_file)] if run.forget_set_file else []
        cands += [paths.forget_set_path(c, run.forget_set) for c in self.ckpts]
        for p in cands:
            if p.is_file():
                return load_forget_set(p).manifest
        raise UserError(f"forget set file of {run.forget_set} not found ({', '.join(map(str, cands)) or 'no path'})")

    def _dirs(self, run: Run) -> list[Path]:
        roots = list(self.ckpts)
        if run.forget_set_file:
            roots.insert(0, Path(run.forget_set_file).parent.parent)
        return list(dict.fromkeys(d for c in roots for d in [paths.memorization_dir(c), *paths.score_search_dirs(c)]))

    def scores(self, run: Run) -> tuple[Path, np.ndarray]:
        """``(score file, scores by global id)``; a :class:`UserError` saying why when not found."""
        m = self._manifest(run)
        name = m.get("eval_score_file") or m.get("score_file")
        sha = m.get("eval_score_sha256") or m.get("score_sha256")
        if not name:
            raise UserError(f"the manifest of {run.forget_set} names no memorization score file")
        key = f"{name}:{sha}"
        if key not in self.cache:
            self.cache[key] = self._find(run, str(name), sha)
        hit = self.cache[key]
        if isinstance(hit, str):
            raise UserError(hit)
        return hit

    def _find(self, run: Run, name: str, sha: str | None) -> tuple[Path, np.ndarray] | str:
        tried = []
        for d in self._dirs(run):
            p = d / name
            tried.append(str(p))
            if not p.is_file() or (sha and sha256_file(p) != sha):
                continue
            try:
                with np.load(p, allow_pickle=False) as z:
                    k = score_key(run.dataset, p) or next((k for k in SCORE_KEYS if k in z.files), None)
                    n = z[k].shape[0] if k else 0
                return p, load_scores(p, k, n)
            except (UserError, OSError, ValueError, KeyError) as e:
                return f"memorization score file {p} unusable: {' '.join(str(e).split())[:160]}"
        return f"memorization score file {name} (sha256 {str(sha)[:12]}) not found; looked in {', '.join(tried)}"


def _run_examples(run: Run, finder: ScoreFinder) -> tuple[np.ndarray, np.ndarray, np.ndarray, Path]:
    """``(scores, correct, non-member)`` of the run's forget examples, and the score file."""
    f = run.path / "outputs.npz"
    if not f.is_file():
        raise UserError(f"{run.path}: no outputs.npz")
    with np.load(f, allow_pickle=False) as z:
        out = {k: np.asarray(z[k]) for k in z.files}
    sfile, scores = finder.scores(run)
    ids = out["forget_ids"].astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= scores.shape[0]):
        raise UserError(f"{run.path}: forget ids outside the score file {sfile}")
    correct = np.argmax(out["forget_logits"], axis=1) == out["forget_labels"]
    return scores[ids], correct, confidence_nonmember(out, run.seed), sfile


def _binned(edges: np.ndarray, s: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.clip(np.searchsorted(edges, np.clip(s, edges[0], edges[-1]), side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(idx, minlength=len(edges) - 1)
    sums = np.bincount(idx, weights=v.astype(np.float64), minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts, np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def mem_bins(rep: Report, ckpts: Sequence[str | Path], bins: int = 5) -> MemBins:
    """The binned curves of every row of ``rep`` (score rows, then the retrain references)."""
    res = MemBins(np.linspace(0.0, 1.0, bins + 1))
    finder = ScoreFinder(ckpts)
    files: set[str] = set()
    for row, method in list(rep.rows) + list(rep.ref_rows):
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for (r, _col), cell in rep.cells.items():
            if r != row:
                continue
            for s in cell.results:
                try:
                    sc, ok, nm, sfile = _run_examples(s.run, finder)
                except UserError as e:
                    res.notes.append(str(e))
                    continue
                files.add(str(sfile))
                parts.append((sc, ok, nm))
        if not parts:
            continue
        sc, ok, nm = (np.concatenate(x) for x in zip(*parts))
        counts, acc = _binned(res.edges, sc, ok)
        _, mia = _binned(res.edges, sc, nm)
        res.curves.append(BinCurve(row, rep.label(row), rep.pretrained.get(row, ""), method.lower() == "retrain",
                                   counts, acc, mia))
    res.notes = list(dict.fromkeys(res.notes))
    res.score_files = sorted(files)
    return res
