"""analysis.py / analysis_mia.py as commands: the original README's §4 commands, verbatim (the
placeholders filled in), on fake unlearning runs under the default ``ckpts/unlearn``."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _fake_runs_module():
    spec = importlib.util.spec_from_file_location("_report_fakes", REPO / "tests" / "results" / "test_report.py")
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
