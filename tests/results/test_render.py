"""results/render.py and results/export.py on fake run directories: the Markdown, CSV (fixed
schema), per-run CSV and JSON outputs, and the figure."""
import csv
import json

import numpy as np
import pytest

from fake_runs import FT_HIGH_TOW, analyse, make_fake_runs
from results.export import CSV_FIELDS, RUNS_FIELDS, csv_header
from results.labels import HPARAM_FIELDS


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return make_fake_runs(tmp_path_factory.mktemp("unlearn"))


def test_outputs_written(fake_root, tmp_path, capsys):
    analyse(fake_root, tmp_path, "--dataset", "digits", "--no_aug")
    out = capsys.readouterr().out
    md = (tmp_path / "tow.md").read_text()
    assert md in out and "| method | pretrained | low (n=60) | mid (n=60) | high (n=60) |" in md
    assert "## Detail" in md and "| Retrain | unknown | high (n=60) | 1, 2, 3 |" in md
    lines = (tmp_path / "tow.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["method", "method_tag", "pretrained", "forget_set"] and "tow_mean" in header
    # a fixed schema: every hyperparameter name has its column, whatever the runs hold
    assert header == csv_header(CSV_FIELDS, "tow") and header[-len(HPARAM_FIELDS) - 1:-1] == list(HPARAM_FIELDS)
    # 3 scored rows + 1 reference row, 3 forget sets each
    assert len(lines) == 1 + 4 * 3
    rows = list(csv.DictReader(lines))
    ft = [r for r in rows if r["method_tag"] == "FT_lr0.01_ep10_sgd" and r["forget_set"] == "mem-high_n60"][0]
    assert float(ft["tow_mean"]) == pytest.approx(np.mean(FT_HIGH_TOW))
    assert float(ft["tow_low"]) < float(ft["tow_mean"]) < float(ft["tow_high"])
    assert ft["label"] == "FT" and ft["header"] == "high (n=60)"
    js = json.loads((tmp_path / "tow.json").read_text())
    assert js["no_aug"] is True and js["table"]["FT_lr0.01_ep10_sgd"]["mem-mid_n60"].endswith(
        "no retrain for seed(s) 3")
    assert [r["label"] for r in js["rows"]] == ["Original", "FT", "GA"] and js["single_seed"] is False


def test_runs_csv_one_line_per_run(fake_root, tmp_path):
    analyse(fake_root, tmp_path, "--dataset", "digits")
    rows = list(csv.DictReader((tmp_path / "tow_runs.csv").read_text().splitlines()))
    assert list(rows[0]) == csv_header(RUNS_FIELDS, "tow")
    # FT, GA, original: 3 levels x 3 seeds; retrain: 8 (mem-mid seed 3 missing)
    assert len(rows) == 3 * 9 + 8
    ft = {(r["column"], r["seed"]): r for r in rows if r["method"] == "FT"}
    for seed, expect in zip((1, 2, 3), FT_HIGH_TOW):
        r = ft[("mem-high_n60", str(seed))]
        assert float(r["tow"]) == pytest.approx(expect) and r["retrain_dir"].endswith(f"retrain/seed{seed}")
    assert ft[("mem-mid_n60", "3")]["tow"] == "" and ft[("mem-mid_n60", "3")]["retrain_dir"] == ""
    assert {r["mia_confidence"] for r in rows if r["method"] == "GA"} == {"0.9"}


def test_plot_written(fake_root, tmp_path):
    pytest.importorskip("matplotlib")
    analyse(fake_root, tmp_path, "--dataset", "digits")
    png, pdf = tmp_path / "tow.png", tmp_path / "tow.pdf"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-"
