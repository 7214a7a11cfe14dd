"""``--select CRITERION``: one row per method and start model, its hyperparameters chosen by a
criterion that never looks at the forget sets the table evaluates.

``random``: among a method's settings (its method tags) from one pretraining recipe, keep the one
with the best mean score (the table's metric: ToW for ``analysis.py``, ToW-MIA for
``analysis_mia.py``) on the **random** forget sets (kind ``random``) of the same size as the
table's forget sets, every seed of every such set pooled, each run scored against the retrain of
its own random set, seed and recipe. Random forget sets are then not columns of the table. A
RUM variant (its steps and grouping) counts as a method of its own. A method with one setting
keeps it. A method with several settings and no scored random run is an
error naming what to run.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from results.labels import display_name, run_hparams
from results.runs import Run
from results.table import Metric, RetrainIndex, fill_cells, nominal_size, recipe_rows
from unlearn import RUM
from utils.errors import UserError

__all__ = ["CRITERIA", "select_rows"]

CRITERIA = ("random",)


def _size(r: Run) -> int | None:
    return nominal_size(r.column) or r.num_forget


def _method(r: Run) -> str:
    """What one row is kept for: the paper name; a RUM variant (its steps and grouping) is a method."""
    name = display_name(r.method, r.hparams)
    if name == RUM:
        hp = run_hparams(r.method, r.hparams, r.sam, r.rum)
        name = f"RUM ({', '.join(str(hp[k]) for k in ('steps', 'grouping') if hp.get(k))})"
    return name


def _random_scores(pool: Sequence[Run], metric: Metric) -> dict[tuple[str, str | None], list[float]]:
    """``(method tag, recipe) -> every scored seed value`` on the random forget sets of ``pool``."""
    rows, _, _ = recipe_rows(pool)
    cells = fill_cells(rows, RetrainIndex(rows), metric)
    out: dict[tuple[str, str | None], list[float]] = {}
    for cell in cells.values():
        if cell.method.lower() == "retrain" or not cell.results:
            continue
        r0 = cell.results[0].run
        out.setdefault((r0.method_tag, r0.recipe), []).extend(cell.values)
    return out


def _choose(tags: list[str], recipe: str | None, scores: dict) -> tuple[str | None, list[dict[str, Any]]]:
    cands = []
    for t in tags:
        vals = scores.get((t, recipe), [])
        cands.append({"method_tag": t, "score": float(np.mean(vals)) if vals else None, "n": len(vals)})
    scored = [c for c in cands if c["score"] is not None]
    if len(tags) == 1:
        return tags[0], cands
    if not scored:
        return None, cands
    best = max(scored, key=lambda c: (c["score"], c["n"]))  # ties: the first tag in sorted order
    return best["method_tag"], cands


def _missing_error(missing: list[str], sizes: list[int], metric: Metric, rum: bool) -> UserError:
    n = " or ".join(str(s) for s in sizes)
    script = "main_forget.py (main_rum.py for RUM)" if rum else "main_forget.py"
    return UserError(
        f"--select random: no {metric.title}-scored run on a random forget set of {n} examples for "
        f"{'; '.join(missing)}; run {script} with each of their settings and --num_indexes_to_replace "
        f"{sizes[0]} (no --mem, --mem_proxy, --group_index or --class_to_replace: a random forget set), "
        f"plus --unlearn retrain on the same forget set, seed and start model")


def select_rows(table: Sequence[Run], pool: Sequence[Run], metric: Metric,
                criterion: str = "random") -> tuple[list[Run], dict[str, Any]]:
    """``(the table's runs, one setting per method and recipe kept; the selection record)``.
    ``pool``: every run of the table's dataset and architecture (random forget sets among them)."""
    if criterion not in CRITERIA:
        raise UserError(f"--select {criterion}: unknown criterion; known: {', '.join(CRITERIA)}")
    table = [r for r in table if r.kind != "random"]
    if not any(not r.is_retrain for r in table):
        raise UserError("--select random: the selected runs are all on random forget sets (the selection's own); "
                        "choose the forget sets to evaluate (e.g. --mem)")
    sizes = sorted({s for r in table if not r.is_retrain for s in [_size(r)] if s is not None})
    rand = [r for r in pool if r.kind == "random" and _size(r) in sizes]
    scores = _random_scores(rand, metric)
    groups: dict[tuple[str, str | None], list[str]] = {}
    starts: dict[tuple[str, str | None], str] = {}
    for r in table:
        if not r.is_retrain:
            key = (_method(r), r.recipe)
            if r.method_tag not in groups.setdefault(key, []):
                groups[key].append(r.method_tag)
            starts[key] = r.pretrained or "unknown"
    choices, missing, keep = [], [], set()
    for key, tags in groups.items():
        chosen, cands = _choose(sorted(tags), key[1], scores)
        if chosen is None:
            missing.append(f"{key[0]} [{starts[key]}] ({len(tags)} settings)")
            continue
        keep.add((chosen, key[1]))
        best = next(c for c in cands if c["method_tag"] == chosen)
        choices.append({"method": key[0], "pretrained": starts[key], "method_tag": chosen,
                        "score": best["score"], "n": best["n"], "candidates": cands,
                        "reason": "only setting" if len(tags) == 1 else f"best mean {metric.title} on the random sets"})
    if missing:
        raise _missing_error(missing, sizes or [0], metric, any(m.startswith("RUM ") for m in missing))
    cols = sorted({r.column for r in rand})
    picked = [c for c in choices if len(c["candidates"]) > 1]

    def runs(n: int) -> str:
        return f"{n} run" + ("" if n == 1 else "s")

    text = (f"Selection (--select random): one row per method and start model, its hyperparameters those with "
            f"the best mean {metric.title} on the random forget sets {', '.join(cols) or '(none)'}, never on the "
            f"forget sets above: " + ("; ".join(
                f"{c['method']} [{c['pretrained']}] → {c['method_tag']} ({c['score']:.3f} over {runs(c['n'])}, "
                f"of {len(c['candidates'])} settings)" for c in picked) or "no method had several settings")
            + (f"; {len(choices) - len(picked)} with one setting kept as is." if len(choices) > len(picked) else "."))
    kept = [r for r in table if r.is_retrain or (r.method_tag, r.recipe) in keep]
    return kept, {"criterion": criterion, "metric": metric.name, "forget_sets": cols, "sizes": sizes,
                  "choices": choices, "text": text}
