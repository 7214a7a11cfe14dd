"""results/render.py on fake run directories: the Markdown, CSV and JSON outputs and the plot."""
import json

import numpy as np
import pytest

from fake_runs import FT_HIGH_TOW, analyse, make_fake_runs


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return make_fake_runs(tmp_path_factory.mktemp("unlearn"))


def test_outputs_written(fake_root, tmp_path, capsys):
    analyse(fake_root, tmp_path, "--dataset", "digits", "--no_aug")
    out = capsys.readouterr().out
    md = (tmp_path / "tow.md").read_text()
    assert md in out and "| method | pretrained | mem-low_n60 | mem-mid_n60 | mem-high_n60 |" in md
    assert "## Detail" in md and "| retrain | unknown | mem-high_n60 | 1, 2, 3 |" in md
    lines = (tmp_path / "tow.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["method", "method_tag", "pretrained", "forget_set"] and "tow_mean" in header
    # 3 scored rows + 1 reference row, 3 forget sets each
    assert len(lines) == 1 + 4 * 3
    import csv

    rows = list(csv.DictReader(lines))
    ft = [r for r in rows if r["method_tag"] == "FT_lr0.01_ep10_sgd" and r["forget_set"] == "mem-high_n60"][0]
    assert float(ft["tow_mean"]) == pytest.approx(np.mean(FT_HIGH_TOW))
    assert float(ft["tow_low"]) < float(ft["tow_mean"]) < float(ft["tow_high"])
    js = json.loads((tmp_path / "tow.json").read_text())
    assert js["no_aug"] is True and js["table"]["FT_lr0.01_ep10_sgd"]["mem-mid_n60"].endswith(
        "no retrain for seed(s) 3")


def test_plot_written(fake_root, tmp_path):
    pytest.importorskip("matplotlib")
    analyse(fake_root, tmp_path, "--dataset", "digits")
    png = tmp_path / "tow.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
