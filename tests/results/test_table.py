"""results/table.py on fake run directories: pairing with retrain, aggregation over seeds,
column and row order. (The ToW / ToW-MIA / interval formulas themselves are tested in
tests/evaluation/test_metrics.py.)"""
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from results.render import cell_text, render_markdown
from results.runs import Filters, discover, select
from results.table import METRICS, build_report
from utils.errors import UserError
from fake_runs import (FT_HIGH, FT_HIGH_TOW, FT_HIGH_TOW_MIA, RETRAIN_HIGH, analyse, cell, make_fake_runs,
                       write_run)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return make_fake_runs(tmp_path_factory.mktemp("unlearn"))


def test_pairing_and_hand_tow(fake_root, tmp_path):
    js = analyse(fake_root, tmp_path, "--dataset", "digits")
    c = cell(js, "FT_lr0.01_ep10_sgd", "mem-high_n60")
    assert c["seeds"] == [1, 2, 3] and c["n"] == 3
    for s, expect in zip(c["per_seed"], FT_HIGH_TOW):
        # paired with the retrain run of the same forget set and the same seed
        assert Path(s["retrain_dir"]) == fake_root / "digits_mem-high_n60" / "retrain" / f"seed{s['seed']}"
        assert s["value"] == pytest.approx(expect, abs=1e-12)
    assert c["mean"] == pytest.approx(np.mean(FT_HIGH_TOW), abs=1e-12)
    # the interval is scipy's Student-t interval
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(FT_HIGH_TOW), scale=stats.sem(FT_HIGH_TOW))
    assert c["half_width"] == pytest.approx((hi - lo) / 2, rel=1e-9)
    assert c["text"] == f"{np.mean(FT_HIGH_TOW):.3f} ± {(hi - lo) / 2:.3f} (3 seeds)"
    # means over seeds of the detail table
    assert c["means"]["retain"] == pytest.approx(np.mean([v[0] for v in FT_HIGH.values()]))
    assert c["means"]["mia"] == pytest.approx(np.mean([v[3] for v in FT_HIGH.values()]))
    # columns ordered low, mid, high; original first among the rows; retrain only a reference
    assert [col["key"] for col in js["columns"]] == ["mem-low_n60", "mem-mid_n60", "mem-high_n60"]
    assert [r["method_tag"] for r in js["rows"]] == ["original", "FT_lr0.01_ep10_sgd", "GA_lr0.0001_ep5_sgd"]
    assert [r["method_tag"] for r in js["reference_rows"]] == ["retrain"]


def test_tow_mia_hand(fake_root, tmp_path):
    js = analyse(fake_root, tmp_path, "--dataset", "digits", metric="tow_mia")
    c = cell(js, "FT_lr0.01_ep10_sgd", "mem-high_n60")
    assert [s["value"] for s in c["per_seed"]] == pytest.approx(FT_HIGH_TOW_MIA, abs=1e-12)
    assert (tmp_path / "tow_mia.md").is_file() and (tmp_path / "tow_mia.csv").is_file()


def test_missing_retrain_reported_in_cell(fake_root, tmp_path):
    js = analyse(fake_root, tmp_path, "--dataset", "digits")
    c = cell(js, "GA_lr0.0001_ep5_sgd", "mem-mid_n60")
    assert c["seeds"] == [1, 2, 3] and c["n"] == 2 and c["missing_retrain_seeds"] == [3]
    assert "no retrain for seed(s) 3" in c["text"] and "(2 seeds)" in c["text"]
    md = (tmp_path / "tow.md").read_text()
    assert "no retrain for seed(s) 3" in md


def test_retrain_missing_everywhere_still_prints(tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(root, method="FT", tag="FT", forget_set="digits_mem-high_n60", seed=1, acc=(1, 0.5, 0.9, 0.3),
              level="high")
    js = analyse(root, tmp_path / "out")
    c = cell(js, "FT", "mem-high_n60")
    assert c["text"] == "no retrain for seed(s) 1" and c["mean"] is None
    out = capsys.readouterr()
    assert "no retrain for seed(s) 1" in out.out and "no retrain runs" in out.err


def test_one_seed_has_no_interval(tmp_path):
    root = tmp_path / "runs"
    for method in ("retrain", "FT"):
        write_run(root, method=method, tag=method, forget_set="digits_mem-low_n60", seed=5,
                  acc=(1.0, 0.9, 0.9, 0.3) if method == "retrain" else (1.0, 0.8, 0.9, 0.3), level="low")
    js = analyse(root, tmp_path / "out")
    c = cell(js, "FT", "mem-low_n60")
    # every cell has one seed: the cells show the mean, one caption line says why there is no interval
    assert c["half_width"] is None and c["text"] == "0.900" and js["single_seed"] is True
    md = (tmp_path / "out" / "tow.md").read_text()
    assert "| FT | unknown | 0.900 |" in md and md.count("Every cell has one seed: no 95% interval") == 1
    assert "1 seed, no interval" not in md
    # one cell of three seeds: the single-seed cells say so themselves
    for seed in (6, 7):
        for method in ("retrain", "FT"):
            write_run(root, method=method, tag=method, forget_set="digits_mem-high_n60", seed=seed, level="high",
                      acc=(1.0, 0.9, 0.9, 0.3) if method == "retrain" else (1.0, 0.8 + seed / 100, 0.9, 0.3))
    write_run(root, method="retrain", tag="retrain", forget_set="digits_mem-high_n60", seed=5, level="high",
              acc=(1.0, 0.9, 0.9, 0.3))
    write_run(root, method="FT", tag="FT", forget_set="digits_mem-high_n60", seed=5, level="high",
              acc=(1.0, 0.8, 0.9, 0.3))
    js = analyse(root, tmp_path / "out")
    assert cell(js, "FT", "mem-low_n60")["text"] == "0.900 (1 seed, no interval)" and js["single_seed"] is False
    assert cell(js, "FT", "mem-high_n60")["text"].endswith("(3 seeds)")


def test_sha_mismatch_is_not_paired(tmp_path):
    root = tmp_path / "runs"
    fs = "digits_mem-low_n60"
    write_run(root, method="retrain", tag="retrain", forget_set=fs, seed=1, acc=(1, 1, 1, 0), sha="aaa", level="low")
    write_run(root, method="FT", tag="FT", forget_set=fs, seed=1, acc=(1, 1, 1, 0), sha="bbb", level="low")
    js = analyse(root, tmp_path / "out")
    c = cell(js, "FT", "mem-low_n60")
    assert c["missing_retrain_seeds"] == [1] and any("sha256 differs" in n for n in c["notes"])


def test_collapsed_marked(tmp_path):
    root = tmp_path / "runs"
    fs = "digits_mem-low_n60"
    write_run(root, method="retrain", tag="retrain", forget_set=fs, seed=1, acc=(1, 1, 1, 0), level="low")
    write_run(root, method="GA", tag="GA", forget_set=fs, seed=1, acc=(0.1, 0.1, 0.1, 1), level="low",
              collapsed=True)
    js = analyse(root, tmp_path / "out")
    assert "collapsed: seed(s) 1" in cell(js, "GA", "mem-low_n60")["text"]


def test_column_order_kinds(tmp_path):
    runs = []
    root = tmp_path / "runs"
    specs = [("digits_random_n60_seed1", "random", None, None, None), ("digits_es-g2_n60", "es", None, None, 2),
             ("digits_mem-mix_n60", "mem", "mix", None, None), ("digits_proxy-entropy-low_n60", "proxy", "low",
                                                                 "entropy", None),
             ("digits_class-3_seed1", "class", None, None, None), ("digits_mem-low_n60", "mem", "low", None, None),
             ("digits_es-g-1_n60", "es", None, None, -1)]
    for fs, kind, level, proxy, g in specs:
        write_run(root, method="FT", tag="FT", forget_set=fs, seed=1, acc=(1, 1, 1, 0), kind=kind, level=level,
                  proxy=proxy, group_index=g)
    runs, _ = discover(root)
    rep = build_report(select(runs, Filters()), METRICS["tow"])
    assert [c.key for c in rep.columns] == ["mem-low_n60", "mem-mix_n60", "proxy-entropy-low_n60", "es-g2_n60",
                                            "es-g-1_n60", "random_n60", "class-3"]
    assert cell_text(rep.cells[("FT", "random_n60")]) == "no retrain for seed(s) 1"


SGD_RECIPE = {"key": {"optimizer": "sgd", "epochs": 8}, "label": "SGD"}
SAM_RECIPE = {"key": {"optimizer": "sam-min_rho1_lamb1_adaptive", "epochs": 8}, "label": "SAM-min rho1 lamb1 adaptive"}


def test_each_run_is_scored_against_the_retrain_of_its_own_pretraining_recipe(tmp_path):
    """FT from an SGD- and from a SAM-pretrained model on the same forget set and seed: two rows,
    each scored against the retrain of its own recipe (DESIGN.md §7.2), by hand:
    SGD: FT (0.98, 0.30, 0.85) vs retrain (1.00, 0.10, 0.90): 0.80 * 0.98 * 0.95 = 0.7448;
    SAM: FT (1.00, 0.10, 0.90) vs retrain (1.00, 0.12, 0.90): 0.98 * 1 * 1 = 0.98.
    A recipe without a retrain gets no score, and the cell says why."""
    fs = "digits_mem-high_n60"
    write_run(tmp_path / "sgd", method="retrain", tag="retrain_lr0.1_ep8", forget_set=fs, seed=1,
              acc=RETRAIN_HIGH[1], level="high", model_name="sgd_model", start_recipe=SGD_RECIPE)
    write_run(tmp_path / "sam", method="retrain", tag="retrain_lr0.1_ep8_sam", forget_set=fs, seed=1,
              acc=(1.00, 0.12, 0.90, 0.78), level="high", model_name="sam_model", start_recipe=SAM_RECIPE)
    other = {"key": {"optimizer": "sgd", "epochs": 8, "weight_decay": 0}, "label": "SGD wd0"}
    for d, acc, rec in (("sgd", FT_HIGH[1], SGD_RECIPE), ("sam", (1.00, 0.10, 0.90, 0.80), SAM_RECIPE),
                        ("wd0", FT_HIGH[1], other)):
        write_run(tmp_path / d, method="FT", tag="FT_lr0.01_ep10_sgd", forget_set=fs, seed=1, acc=acc, level="high",
                  model_name=f"{d}_model", start_recipe=rec)
    runs, _ = discover(tmp_path)
    rep = build_report(runs, METRICS["tow"])
    tags = sorted(t for t, _ in rep.rows)
    assert tags == ["FT_lr0.01_ep10_sgd @SAM-min rho1 lamb1 adaptive", "FT_lr0.01_ep10_sgd @SGD",
                    "FT_lr0.01_ep10_sgd @SGD wd0"]
    col = "mem-high_n60"
    sgd = rep.cells[("FT_lr0.01_ep10_sgd @SGD", col)]
    sam = rep.cells[("FT_lr0.01_ep10_sgd @SAM-min rho1 lamb1 adaptive", col)]
    assert sgd.results[0].value == pytest.approx(0.7448) and sgd.results[0].retrain.pretrained == "SGD"
    assert sam.results[0].value == pytest.approx(0.98) and sam.results[0].retrain.method_tag.startswith("retrain_lr0.1_ep8_sam")
    wd0 = rep.cells[("FT_lr0.01_ep10_sgd @SGD wd0", col)]
    assert wd0.results[0].value is None and any("no retrain for the pretraining recipe SGD wd0" in n for n in wd0.notes)
    assert rep.pretrained["FT_lr0.01_ep10_sgd @SGD"] == "SGD"
    md = render_markdown(rep)
    # the label is the method's name; the start model is the pretrained column, not a suffix
    assert "| FT | SGD | 0.745 |" in md and "| FT | SAM-min rho1 lamb1 adaptive | 0.980 |" in md
    assert "@SGD" not in md.split("## Detail")[0].split("Notes:")[0]


def test_several_matching_retrains_are_refused_and_retrain_picks_one(tmp_path):
    fs = "digits_mem-high_n60"
    for tag, acc in (("retrain_lr0.1_ep8", RETRAIN_HIGH[1]), ("retrain_lr0.1_ep30", (0.98, 0.30, 0.85, 0.5))):
        write_run(tmp_path / tag, method="retrain", tag=tag, forget_set=fs, seed=1, acc=acc, level="high",
                  model_name="sgd_model", start_recipe=SGD_RECIPE)
    write_run(tmp_path / "ft", method="FT", tag="FT_lr0.01_ep10_sgd", forget_set=fs, seed=1, acc=FT_HIGH[1],
              level="high", model_name="sgd_model", start_recipe=SGD_RECIPE)
    runs, _ = discover(tmp_path)
    with pytest.raises(UserError, match=r"2 retrain runs match \(retrain_lr0.1_ep30, retrain_lr0.1_ep8\); "
                                        r"choose the reference with --retrain TAG"):
        build_report(runs, METRICS["tow"])
    rep = build_report(select(runs, Filters(retrain="retrain_lr0.1_ep30")), METRICS["tow"])
    cell = rep.cells[("FT_lr0.01_ep10_sgd", "mem-high_n60")]
    assert cell.results[0].value == pytest.approx(1.0)  # FT equals that retrain on FA, RA and TA


def test_seeds_of_one_pretraining_recipe_aggregate_in_one_row(tmp_path):
    """Each seed has its own pretrained model (..._seed1, ..._seed2): the row is the recipe, not
    the seed, so the seeds aggregate; SGD and SAM pretraining stay two rows."""
    fs = "digits_mem-high_n60"
    for seed in (1, 2):
        write_run(tmp_path, method="retrain", tag="retrain", forget_set=fs, seed=seed, acc=RETRAIN_HIGH[seed],
                  level="high")
        for model in ("cnn_s_sgd_ep8", "cnn_s_sam-min_ep8"):
            d = write_run(tmp_path / model, method="FT", tag="FT_lr0.01_ep10_sgd", forget_set=fs, seed=seed,
                          acc=FT_HIGH[seed], level="high")
            m = json.loads((d / "metrics.json").read_text())
            m["model_name"] = f"{model}_seed{seed}"
            (d / "metrics.json").write_text(json.dumps(m))
    runs, _ = discover(tmp_path)
    rep = build_report(runs, METRICS["tow"])
    assert sorted(t for t, _ in rep.rows) == ["FT_lr0.01_ep10_sgd @cnn_s_sam-min_ep8", "FT_lr0.01_ep10_sgd @cnn_s_sgd_ep8"]
    for (tag, _), cell in rep.cells.items():
        if tag.startswith("FT"):
            assert sorted(r.seed for r in cell.results) == [1, 2]
