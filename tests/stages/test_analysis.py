"""analysis.py / analysis_mia.py as commands (stages/analysis.py): the original README's §4
commands, verbatim (the placeholders filled in), on fake unlearning runs under the default
``ckpts/unlearn``; which flags filter; one-line errors; ``--es``."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arg_parser import given_flags
from stages.analysis import main as run_analysis

REPO = Path(__file__).resolve().parents[2]


def _fake_runs_module():
    spec = importlib.util.spec_from_file_location("_report_fakes", REPO / "tests" / "results" / "fake_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# README §4, with {DATASET}=CIFAR10, {ARCHITECTURE}=ResNet18, {METHOD}=FT, {MEM_PROXY}=confidence,
# {MEM_GROUP}=high; "--num_indexes_to_replace 3000" is literal in the README.
README_FLAGS = ["--no_aug", "--dataset", "CIFAR10", "--arch", "ResNet18", "--unlearn", "FT",
                "--mem_proxy", "confidence", "--mem", "high", "--num_indexes_to_replace", "3000"]


def _check_outputs(out_dir, stem, stdout):
    js = json.loads((out_dir / f"{stem}.json").read_text())
    assert js["dataset"] == "cifar10" and js["arch"] == "resnet18" and js["no_aug"] is True
    assert list(js["table"]) == ["FT_lr0.01_ep10_sgd"]
    assert list(js["table"]["FT_lr0.01_ep10_sgd"]) == ["proxy-confidence-high_n3000"]
    cell = [c for c in js["cells"] if c["method_tag"] == "FT_lr0.01_ep10_sgd"][0]
    assert cell["n"] == 2 and cell["missing_retrain_seeds"] == []
    assert (out_dir / f"{stem}.md").read_text() in stdout
    assert (out_dir / f"{stem}.csv").is_file()
    return cell


def test_readme_commands_verbatim(tmp_path, monkeypatch, capsys):
    fakes = _fake_runs_module()
    fakes.make_fake_runs(tmp_path / "ckpts" / "unlearn")  # digits mem runs + cifar10 proxy runs
    out_dir = tmp_path / "ckpts" / "analysis"
    # analysis.py as a real command (a subprocess), analysis_mia.py in-process meanwhile
    proc = subprocess.Popen([sys.executable, str(REPO / "analysis.py"), *README_FLAGS], cwd=tmp_path,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import analysis_mia
        from utils.cli import run_main

        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", ["analysis_mia.py", *README_FLAGS])
        with pytest.raises(SystemExit) as e:
            run_main(analysis_mia.main)
        assert e.value.code == 0
        cell = _check_outputs(out_dir, "tow_mia", capsys.readouterr().out)
        # ToW-MIA by hand: retrain (RA 1.0, MIA 0.7, TA 0.93); FT (0.99, MIA 0.5, 0.92) for both seeds
        #   (1 - 0.2)(1 - 0.01)(1 - 0.01) = 0.78408
        assert cell["mean"] == pytest.approx(0.78408, abs=1e-12) and cell["half_width"] == 0.0
    finally:
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    cell = _check_outputs(out_dir, "tow", out)
    # ToW by hand: retrain (RA 1.0, FA 0.2, TA 0.93); FT (0.99, 0.3 + 0.1 s, 0.92)
    #   seed 1: (1 - 0.2)(1 - 0.01)(1 - 0.01) = 0.78408; seed 2: (1 - 0.3) * 0.99 * 0.99 = 0.68607
    assert cell["mean"] == pytest.approx((0.78408 + 0.68607) / 2, abs=1e-12)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return _fake_runs_module().make_fake_runs(tmp_path_factory.mktemp("unlearn"))


def test_given_flags_dataset_arch():
    assert given_flags([], ("dataset", "arch")) == set()
    assert given_flags(["--dataset", "digits", "--mem", "high"], ("dataset", "arch")) == {"dataset"}
    assert given_flags(["--dataset=cifar10", "--arch", "resnet18"], ("dataset", "arch")) == {"dataset", "arch"}
    assert given_flags(["--datas", "digits"], ("dataset", "arch")) == set()  # abbreviations are not flags


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


def test_select_random_without_random_runs_is_one_line_exit_2(fake_root, tmp_path, monkeypatch, capsys):
    """--select random on runs without random forget sets: what to run, in one line, exit status 2."""
    from utils.cli import run_main

    fakes = _fake_runs_module()
    root = tmp_path / "runs"
    for tag, a in (("NG_alpha0.97", 0.97), ("NG_alpha0.99", 0.99)):
        fakes.write_run(root, method="NG", tag=tag, forget_set="digits_mem-high_n60", seed=1, level="high",
                        acc=(1, 0.5, 0.9, 0.3), hparams=fakes.it(alpha=a))
    monkeypatch.setattr(sys, "argv", ["analysis.py", "--runs", str(root), "--out", str(tmp_path / "o"),
                                      "--select", "random"])
    import analysis

    with pytest.raises(SystemExit) as e:
        run_main(analysis.main)
    cap = capsys.readouterr()
    assert e.value.code == 2 and cap.out == "" and cap.err.count("\n") == 1
    assert cap.err.startswith("analysis.py: error: --select random: no ToW-scored run on a random forget set of 60 "
                              "examples for NegGrad+ [unknown] (2 settings); run main_forget.py")
    assert not (tmp_path / "o").exists()


def test_without_matplotlib_one_note_and_every_table(fake_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert run_analysis("tow", "analysis.py", ["--runs", str(fake_root), "--out", str(tmp_path), "--dataset",
                                               "digits"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "note: matplotlib is not installed; no figures" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tow.csv", "tow.json", "tow.md", "tow.tex", "tow_runs.csv"]


def _saved_cnn(run_dir):
    """The digits data and a freshly initialized cnn_s (seed 0), saved as a run in ``run_dir``."""
    import torch

    from models import build_for
    from utils.data import load_data
    from utils.rundir import save_model

    data = load_data("digits")
    torch.manual_seed(0)
    model = build_for("cnn_s", data)
    save_model(run_dir, model, arch="cnn_s", num_classes=data.num_classes, dataset="digits")
    return data, model


def test_entanglement_score_cli(tmp_path, capsys):
    """analysis.py --es on a small digits model equals entanglement_score of model.embed."""
    import torch

    from evaluation.entanglement import entanglement_score, entanglement_score_normalized
    from forget_sets.file import make_forget_set, save_forget_set

    data, model = _saved_cnn(tmp_path / "run")
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
    data, model = _saved_cnn(tmp_path / "run")
    argv = ["--es", "--dataset", "digits", "--arch", "cnn_s", "--device", "cpu", "--mask", str(tmp_path / "run"),
            "--group_index", "14", "--num_indexes_to_replace", "30", "--ckpts", str(tmp_path / "ckpts")]
    assert run_analysis("tow", "analysis.py", argv) == 0
    res = json.loads((tmp_path / "ckpts" / "analysis" / "es.json").read_text())
    assert res["num_forget"] == 30 and res["forget_set"].startswith("digits_es-g14_n30")
    assert Path(res["forget_set_file"]).is_file() and math.isfinite(res["es"])
