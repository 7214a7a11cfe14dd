"""results/report.py on fake run directories: discovery, pairing with retrain, aggregation,
filters, bad input, outputs. (The ToW / ToW-MIA / interval formulas themselves are tested in
test_metrics.py.)"""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from utils.errors import UserError
from results.report import (METRICS, Filters, build_report, cell_text, column_label, discover,
                          explicit_flags, run_analysis, select)

# Hand-chosen accuracies (retain, forget, test, MIA-efficacy) of the mem-high cell.
RETRAIN_HIGH = {1: (1.00, 0.10, 0.90, 0.80), 2: (1.00, 0.15, 0.88, 0.75), 3: (0.99, 0.20, 0.89, 0.70)}
FT_HIGH = {1: (0.98, 0.30, 0.85, 0.50), 2: (0.97, 0.25, 0.86, 0.60), 3: (0.99, 0.40, 0.84, 0.55)}
# ToW per seed, by hand:
#   seed 1: (1 - 0.20)(1 - 0.02)(1 - 0.05) = 0.80 * 0.98 * 0.95 = 0.7448
#   seed 2: (1 - 0.10)(1 - 0.03)(1 - 0.02) = 0.90 * 0.97 * 0.98 = 0.85554
#   seed 3: (1 - 0.20)(1 - 0.00)(1 - 0.05) = 0.80 * 1.00 * 0.95 = 0.76
FT_HIGH_TOW = [0.7448, 0.85554, 0.76]
# ToW-MIA per seed: (1 - |dMIA|)(1 - |dRA|)(1 - |dTA|)
#   seed 1: 0.70 * 0.98 * 0.95 = 0.6517; seed 2: 0.85 * 0.97 * 0.98 = 0.80801; seed 3: 0.85 * 1 * 0.95 = 0.8075
FT_HIGH_TOW_MIA = [0.6517, 0.80801, 0.8075]

LEVELS = ("low", "mid", "high")
SEEDS = (1, 2, 3)


def write_run(root, *, method, tag, forget_set, seed, acc, dataset="digits", arch="cnn_s", kind="mem",
              level=None, proxy=None, n=60, sha=None, collapsed=False, group_index=None):
    retain, forget, test, mia = acc
    d = Path(root) / forget_set / tag / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    metrics = {
        "method": method, "method_tag": tag, "dataset": dataset, "arch": arch, "seed": seed,
        "forget_set": forget_set, "forget_set_file": f"ckpts/forget_sets/{forget_set}.npz",
        "forget_set_sha256": sha if sha is not None else f"sha-{forget_set}",
        "forget_kind": kind, "mem_level": level, "mem_proxy": proxy, "group_index": group_index,
        "num_forget": n,
        "accuracy": {"retain": retain, "forget": forget, "val": test, "test": test},
        "mia": {"correctness": mia, "confidence": mia, "entropy": mia, "m_entropy": mia, "prob": mia},
        "unlearn_seconds": 1.0, "collapsed": collapsed, "pretrained": "ckpts/original/x", "sam": None,
        "hparams": {},
    }
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def make_fake_runs(root, *, with_cifar=True):
    """digits/cnn_s: FT, GA, original and retrain on mem low/mid/high (n=60), seeds 1-3; the retrain
    of mem-mid seed 3 is missing. With ``with_cifar``: cifar10/resnet18 runs on a proxy forget
    set (proxy-confidence-high, n=3000), FT and retrain, seeds 1-2."""
    root = Path(root)
    for level in LEVELS:
        fs = f"digits_mem-{level}_n60"
        base_fa = {"low": 0.95, "mid": 0.60, "high": 0.10}[level]
        for seed in SEEDS:
            if level == "high":
                r, ft = RETRAIN_HIGH[seed], FT_HIGH[seed]
            else:
                r = (1.00, base_fa, 0.90, 0.30)
                ft = (0.99, base_fa + 0.01 * seed, 0.88, 0.35)
            if not (level == "mid" and seed == 3):
                write_run(root, method="retrain", tag="retrain", forget_set=fs, seed=seed, acc=r, level=level)
            write_run(root, method="FT", tag="FT_lr0.01_ep10_sgd", forget_set=fs, seed=seed, acc=ft, level=level)
            write_run(root, method="GA", tag="GA_lr0.0001_ep5_sgd", forget_set=fs, seed=seed,
                      acc=(0.90, 0.05 * seed, 0.80, 0.90), level=level)
            write_run(root, method="original", tag="original", forget_set=fs, seed=seed,
                      acc=(1.00, 1.00, 0.92, 0.05), level=level)
    if with_cifar:
        fs = "cifar10_proxy-confidence-high_n3000"
        for seed in (1, 2):
            kw = dict(forget_set=fs, seed=seed, dataset="cifar10", arch="resnet18", kind="proxy", level="high",
                      proxy="confidence", n=3000)
            write_run(root, method="retrain", tag="retrain", acc=(1.0, 0.2, 0.93, 0.7), **kw)
            write_run(root, method="FT", tag="FT_lr0.01_ep10_sgd", acc=(0.99, 0.3 + 0.1 * seed, 0.92, 0.5), **kw)
    return root


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return make_fake_runs(tmp_path_factory.mktemp("unlearn"))


def analyse(root, out, *flags, metric="tow"):
    """Run the analysis in-process; return the parsed JSON output."""
    code = run_analysis(metric, f"{metric}.py", ["--runs", str(root), "--out", str(out), *flags])
    assert code == 0
    return json.loads((Path(out) / f"{metric}.json").read_text())


def cell(js, tag, col):
    found = [c for c in js["cells"] if c["method_tag"] == tag and c["forget_set"] == col]
    assert len(found) == 1, (tag, col)
    return found[0]


# ---------------------------------------------------------------------------------------------

def test_discover_skips_foreign_json(tmp_path):
    make_fake_runs(tmp_path, with_cifar=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.json").write_text(json.dumps({"train_acc": 0.9}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    runs, skipped = discover(tmp_path)
    assert len(runs) == 3 * 3 * 4 - 1
    assert len(skipped) == 2 and any("lacks" in s for s in skipped) and any("unreadable" in s for s in skipped)


def test_column_label_drops_dataset_and_seed():
    assert column_label("digits_mem-high_n60", "digits") == "mem-high_n60"
    assert column_label("cifar10_random_n3000_seed2", "cifar10") == "random_n3000"
    assert column_label("cifar10_mem-mix_n3000_seed2_shuffle", "cifar10") == "mem-mix_n3000_shuffle"


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
    assert c["half_width"] is None and c["text"] == "0.900 (1 seed, no interval)"


def test_sha_mismatch_is_not_paired(tmp_path):
    root = tmp_path / "runs"
    fs = "digits_mem-low_n60"
    write_run(root, method="retrain", tag="retrain", forget_set=fs, seed=1, acc=(1, 1, 1, 0), sha="aaa", level="low")
    write_run(root, method="FT", tag="FT", forget_set=fs, seed=1, acc=(1, 1, 1, 0), sha="bbb", level="low")
    js = analyse(root, tmp_path / "out")
    c = cell(js, "FT", "mem-low_n60")
    assert c["missing_retrain_seeds"] == [1] and any("sha256 differs" in n for n in c["notes"])


def test_filters(fake_root, tmp_path):
    js = analyse(fake_root, tmp_path, "--dataset", "DIGITS", "--unlearn", "ft", "--mem", "4")
    assert [r["method_tag"] for r in js["rows"]] == ["FT_lr0.01_ep10_sgd"]
    assert [c["key"] for c in js["columns"]] == ["mem-high_n60"]
    # retrain kept as the reference even though --unlearn selects FT
    assert cell(js, "FT_lr0.01_ep10_sgd", "mem-high_n60")["n"] == 3
    js = analyse(fake_root, tmp_path, "--dataset", "digits", "--unlearn", "raw")
    assert [r["method_tag"] for r in js["rows"]] == ["original"]
    js = analyse(fake_root, tmp_path, "--num_indexes_to_replace", "3000")
    assert js["dataset"] == "cifar10" and [c["key"] for c in js["columns"]] == ["proxy-confidence-high_n3000"]
    js = analyse(fake_root, tmp_path, "--mem_proxy", "confidence")
    assert [c["key"] for c in js["columns"]] == ["proxy-confidence-high_n3000"]
    # --arch alone: the parser's --dataset default (cifar10) is not applied
    js = analyse(fake_root, tmp_path, "--arch", "cnn_s")
    assert js["dataset"] == "digits" and js["filters"]["dataset"] is None
    with pytest.raises(UserError, match="no run under .* matches --dataset digits --mem_proxy entropy"):
        analyse(fake_root, tmp_path, "--dataset", "digits", "--mem_proxy", "entropy")
    with pytest.raises(UserError, match="no RL run"):
        analyse(fake_root, tmp_path, "--dataset", "digits", "--unlearn", "RL")


def test_explicit_flags():
    assert explicit_flags([]) == set()
    assert explicit_flags(["--dataset", "digits", "--mem", "high"]) == {"dataset"}
    assert explicit_flags(["--dataset=cifar10", "--arch", "resnet18"]) == {"dataset", "arch"}
    assert explicit_flags(["--datas", "digits"]) == {"dataset"}  # argparse abbreviation


def test_mixed_datasets_error(fake_root, tmp_path):
    with pytest.raises(UserError) as e:
        analyse(fake_root, tmp_path)
    msg = str(e.value)
    assert "cifar10" in msg and "digits" in msg and "--dataset" in msg and "\n" not in msg


def test_mixed_archs_error(tmp_path):
    root = tmp_path / "runs"
    for arch in ("cnn_s", "mlp"):
        write_run(root / arch, method="FT", tag="FT", forget_set="digits_mem-low_n60", seed=1,
                  acc=(1, 1, 1, 0), arch=arch, level="low")
    with pytest.raises(UserError, match="architectures: cnn_s .*mlp .*--arch"):
        analyse(root, tmp_path / "out")


@pytest.mark.parametrize("script", ["analysis", "analysis_mia"])
def test_exit_status_2_one_line(script, fake_root, tmp_path, monkeypatch, capsys):
    """No runs, and runs of two datasets: one line on stderr, exit status 2, nothing written."""
    import importlib

    from utils.cli import run_main

    main = importlib.import_module(script).main
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--runs", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as e:
        run_main(main)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.count("\n") == 1 and err.startswith(f"{script}.py: error: --runs") and "does not exist" in err
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--runs", str(fake_root), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as e:
        run_main(main)
    cap = capsys.readouterr()
    assert e.value.code == 2 and cap.out == ""
    assert cap.err.count("\n") == 1 and cap.err.startswith(f"{script}.py: error: the selected runs mix datasets")
    assert "cifar10 (4 runs)" in cap.err and "digits (35 runs)" in cap.err and "--dataset digits" in cap.err
    assert not (tmp_path / "o").exists()


def test_outputs_written(fake_root, tmp_path, capsys):
    analyse(fake_root, tmp_path, "--dataset", "digits", "--no_aug")
    out = capsys.readouterr().out
    md = (tmp_path / "tow.md").read_text()
    assert md in out and "| method | mem-low_n60 | mem-mid_n60 | mem-high_n60 |" in md
    assert "## Detail" in md and "| retrain | mem-high_n60 | 1, 2, 3 |" in md
    lines = (tmp_path / "tow.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["method", "method_tag", "forget_set"] and "tow_mean" in header
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


def test_plot_written(fake_root, tmp_path):
    pytest.importorskip("matplotlib")
    analyse(fake_root, tmp_path, "--dataset", "digits")
    png = tmp_path / "tow.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_entanglement_score_cli(tmp_path, capsys):
    """analysis.py --es on a small digits model equals entanglement_score of model.embed."""
    import torch

    from models import build_model
    from utils.rundir import save_model
    from utils.data import load_data
    from evaluation.entanglement import entanglement_score, entanglement_score_normalized
    from forget_sets.file import make_forget_set, save_forget_set

    data = load_data("digits")
    torch.manual_seed(0)
    model = build_model("cnn_s", data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                        mean=data.mean, std=data.std)
    save_model(tmp_path / "run", model, arch="cnn_s", num_classes=data.num_classes, dataset="digits")
    forget = data.train_ids[::10][:40]
    fs = make_forget_set(data.train_ids, forget, {"dataset": "digits", "kind": "random", "n": 40, "seed": 1,
                                                  "split_seed": 1})
    save_forget_set(tmp_path / "fs.npz", fs)
    common = ["--dataset", "digits", "--arch", "cnn_s", "--device", "cpu", "--mask", str(tmp_path / "run"),
              "--forget_set", str(tmp_path / "fs.npz"), "--out", str(tmp_path / "out")]
    assert run_analysis("tow", "analysis.py", ["--es", *common]) == 0
    res = json.loads((tmp_path / "out" / "es.json").read_text())
    model.eval()
    with torch.no_grad():
        emb = model.embed(data.x.float() / 255).double().numpy()
    expect = entanglement_score(emb[fs.retain_ids], emb[fs.forget_ids])
    assert res["variant"] == "rum" and res["num_forget"] == 40
    assert res["es"] == pytest.approx(expect, rel=1e-5)
    assert "ES of forget set fs (40 forget" in capsys.readouterr().out
    assert run_analysis("tow", "analysis.py", ["--es", "--es_normalized", *common]) == 0
    res = json.loads((tmp_path / "out" / "es.json").read_text())
    assert res["variant"] == "normalized"
    assert res["es"] == pytest.approx(entanglement_score_normalized(emb[fs.retain_ids], emb[fs.forget_ids]),
                                      rel=1e-5, abs=1e-9)
    assert math.isfinite(res["es_rum"])


def test_entanglement_score_builder_group(tmp_path, capsys):
    """Without --forget_set, the shared builder makes the forget set (here an ES group)."""
    import torch

    from models import build_model
    from utils.rundir import save_model
    from utils.data import load_data

    data = load_data("digits")
    torch.manual_seed(0)
    model = build_model("cnn_s", data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                        mean=data.mean, std=data.std)
    save_model(tmp_path / "run", model, arch="cnn_s", num_classes=data.num_classes, dataset="digits")
    argv = ["--es", "--dataset", "digits", "--arch", "cnn_s", "--device", "cpu", "--mask", str(tmp_path / "run"),
            "--group_index", "14", "--num_indexes_to_replace", "30", "--ckpts", str(tmp_path / "ckpts")]
    assert run_analysis("tow", "analysis.py", argv) == 0
    res = json.loads((tmp_path / "ckpts" / "analysis" / "es.json").read_text())
    assert res["num_forget"] == 30 and res["forget_set"].startswith("digits_es-g14_n30")
    assert Path(res["forget_set_file"]).is_file() and math.isfinite(res["es"])


def test_runs_from_two_pretrained_models_get_separate_rows(tmp_path):
    """FT from an SGD- and from a SAM-pretrained model on the same forget set and seed are two
    rows (tagged with the start model), both scored against the one retrain run."""
    fs = "digits_mem-high_n60"
    write_run(tmp_path, method="retrain", tag="retrain", forget_set=fs, seed=1, acc=RETRAIN_HIGH[1], level="high")
    for model, acc in (("sgd_model", FT_HIGH[1]), ("sam_model", (1.00, 0.10, 0.90, 0.80))):
        d = write_run(tmp_path / model, method="FT", tag="FT_lr0.01_ep10_sgd", forget_set=fs, seed=1, acc=acc,
                      level="high")
        m = json.loads((d / "metrics.json").read_text())
        m["model_name"] = model
        (d / "metrics.json").write_text(json.dumps(m))
    runs, _ = discover(tmp_path)
    rep = build_report(runs, METRICS["tow"])
    tags = sorted(t for t, _ in rep.rows)
    assert tags == ["FT_lr0.01_ep10_sgd @sam_model", "FT_lr0.01_ep10_sgd @sgd_model"]
    sam_cell = next(c for (t, _), c in rep.cells.items() if t.endswith("@sam_model"))
    assert sam_cell.results[0].value == pytest.approx(1.0)  # identical to retrain on all three terms


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
