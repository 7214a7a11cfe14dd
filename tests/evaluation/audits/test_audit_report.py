"""Memorization levels of forget examples and the audit tables (levels.py, report.py)."""
import json
import math

import numpy as np
import pytest

from evaluation.audits.levels import example_levels
from evaluation.audits.report import Record, Target, aggregate, render_markdown, report_json
from evaluation.metrics import mean_ci
from forget_sets.select import memorization_groups, select_level


def test_levels_of_a_mix_set_follow_the_groups_it_was_cut_from():
    rng = np.random.default_rng(0)
    train = np.arange(100, 400)
    scores = rng.random(len(train))
    n = 30
    groups = memorization_groups(train, scores, n)
    mix = select_level(groups, "mix", n)
    lv = example_levels(mix, "mem", "mix", groups, n)
    assert lv.tolist() == ["high"] * 10 + ["mid"] * 10 + ["low"] * 10
    assert example_levels(mix, "mem", "high").tolist() == ["high"] * 30
    assert example_levels(mix, "random", None).tolist() == ["all"] * 30
    assert example_levels(mix, "mem", "mix").tolist() == ["all"] * 30  # no groups: no breakdown


def _t(tag, seed, retrain=False):
    return Target(f"/runs/{tag}/seed{seed}", "FT", tag, seed, "mem-high_n10", "SGD", retrain)


def test_aggregate_means_and_intervals_over_seeds():
    recs = [Record("lira", _t("FT", s), "high", {"reject": v, "auc": 0.5}) for s, v in ((1, 0.1), (2, 0.3), (3, 0.2))]
    recs.append(Record("lira", _t("retrain", 1, True), "high", {"reject": 0.05, "auc": float("nan")}))
    rows = aggregate(recs)
    assert [r.tag for r in rows] == ["retrain", "FT"]  # the control first
    ft = rows[1]
    m, h = mean_ci([0.1, 0.3, 0.2])
    assert ft.cells["reject"][:2] == pytest.approx((m, h)) and ft.cells["reject"][2] == 3 and ft.seeds == [1, 2, 3]
    assert ft.cells["auc"] == (0.5, 0.0, 3)
    assert math.isnan(rows[0].cells["auc"][0]) and rows[0].cells["auc"][2] == 0
    md = render_markdown(rows, {"lira": "intro"}, ["a note"])
    assert "| mem-high_n10 | high | retrain (control) | 5.0 | n/a |" in md  # no label given: the tag
    assert f"| mem-high_n10 | high | FT | {100 * m:.1f} ± {100 * h:.1f} | 0.500 |" in md
    assert md.count("| 1,2,3 | FT |") == 1  # the run tag, last
    labelled = aggregate([Record("lira", Target("/r/s1", "NG", "NG_alpha0.9", 1, "c", "SGD", False, "NegGrad+ (α=0.9)"),
                                 "high", {"reject": 0.1})])
    assert labelled[0].name == "NegGrad+ (α=0.9)" and labelled[0].tag == "NG_alpha0.9"
    assert "| NegGrad+ (α=0.9) | 10.0 |" in render_markdown(labelled, {"lira": ""}, [])
    assert "- a note" in md
    js = json.loads(json.dumps(report_json(rows, {"lira": "intro"}, [], {"x": 1})))
    assert js["rows"][0]["cells"]["auc"]["mean"] is None and len(js["rows"][1]["per_seed"]) == 3
