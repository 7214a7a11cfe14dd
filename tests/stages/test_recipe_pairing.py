"""The paper's comparison on digits, end to end: SGD and SAM pretraining, a retrain from each, FT
from each, then analysis.py. Each FT row is scored against the retrain of its own pretraining
recipe (DESIGN.md §7.2), checked by hand from the runs' metrics.json; plus the run-identity
refusals around it (split seed, a concurrent run of the same directory, --precision bf16 on the CPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import analysis
import main_forget
import main_train
from helpers import run_cli
from utils.lock import lock_path

TRAIN = ["--dataset", "digits", "--arch", "mlp", "--epochs", "3", "--batch_size", "64", "--lr", "0.1"]
SAM = ["--sam", "min", "--rho", "0.5"]
SGD_RUN = "digits_mlp_sgd_ep3_lr0.1_bs64_seed2"
SAM_RUN = "digits_mlp_sam-min_rho0.5_lamb1_ep3_lr0.1_bs64_seed2"
FORGET = ["--dataset", "digits", "--arch", "mlp", "--num_indexes_to_replace", "40", "--batch_size", "64"]
FS = "digits_random_n40_seed2"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairing")
    mp = pytest.MonkeyPatch()
    try:
        yield d, mp
    finally:
        mp.undo()


def _cli(work, capsys, module, argv):
    d, mp = work
    return run_cli(module, argv, mp, capsys, d)


def _metrics(d: Path) -> dict:
    return json.loads((d / "metrics.json").read_text())


def _tow(u: dict, r: dict) -> float:
    """By hand: (1 - |FA_u - FA_r|)(1 - |RA_u - RA_r|)(1 - |TA_u - TA_r|)."""
    a, b = u["accuracy"], r["accuracy"]
    return (1 - abs(a["forget"] - b["forget"])) * (1 - abs(a["retain"] - b["retain"])) * (1 - abs(a["test"] - b["test"]))


def test_sgd_and_sam_pipeline_pairs_each_ft_with_its_own_recipe(work, capsys):
    d, _ = work
    for argv in (TRAIN, TRAIN + SAM):
        code, out, err = _cli(work, capsys, main_train, argv)
        assert code == 0, err
    for run in (SGD_RUN, SAM_RUN):
        mask = f"ckpts/original/{run}"
        code, out, err = _cli(work, capsys, main_forget, ["--unlearn", "retrain", *FORGET, "--unlearn_epochs", "3",
                                                          "--unlearn_lr", "0.1", "--mask", mask])
        assert code == 0, err
        if run == SAM_RUN:  # the SAM model's recipe: SAM, unless flags override it
            assert "the recipe of the start model" in out and "--sam min" in out and "--rho 0.5" in out
        code, out, err = _cli(work, capsys, main_forget, ["--unlearn", "FT", *FORGET, "--unlearn_epochs", "1",
                                                          "--mask", mask])
        assert code == 0, err
    root = d / "ckpts" / "unlearn" / FS
    sgd_re = root / SGD_RUN / "retrain_lr0.1_ep3_bs64" / "seed2"
    sam_re = root / SAM_RUN / "retrain_lr0.1_ep3_bs64_sam-min_rho0.5_lamb1" / "seed2"
    sgd_ft, sam_ft = (root / run / "FT_lr0.01_ep1_sgd_bs64" / "seed2" for run in (SGD_RUN, SAM_RUN))
    assert _metrics(sam_re)["hparams"]["recipe"]["sam"]["rho"] == 0.5
    assert _metrics(sgd_re)["hparams"]["recipe"]["sam"] is None
    assert _metrics(sam_ft)["start_recipe"]["label"] == "SAM-min rho0.5 lamb1"
    assert _metrics(sgd_ft)["start_recipe"]["label"] == "SGD"

    code, out, err = _cli(work, capsys, analysis, ["--dataset", "digits", "--arch", "mlp", "--out", "tables"])
    assert code == 0, err
    rep = json.loads((d / "tables" / "tow.json").read_text())
    cells = {c["row"]: c for c in rep["cells"] if c["forget_set"] == "random_n40"}
    sgd_cell, sam_cell = cells["FT_lr0.01_ep1_sgd_bs64 @SGD"], cells["FT_lr0.01_ep1_sgd_bs64 @SAM-min rho0.5 lamb1"]
    assert sgd_cell["pretrained"] == "SGD" and sam_cell["pretrained"] == "SAM-min rho0.5 lamb1"
    assert sgd_cell["per_seed"][0]["retrain_dir"].endswith(str(sgd_re.relative_to(d)))
    assert sam_cell["per_seed"][0]["retrain_dir"].endswith(str(sam_re.relative_to(d)))
    assert sgd_cell["mean"] == pytest.approx(_tow(_metrics(sgd_ft), _metrics(sgd_re)), abs=1e-12)
    assert sam_cell["mean"] == pytest.approx(_tow(_metrics(sam_ft), _metrics(sam_re)), abs=1e-12)
    assert sgd_cell["method_tag"] == sam_cell["method_tag"] == "FT_lr0.01_ep1_sgd_bs64"  # the run directories' tag
    # one row per start model: the label is the method, the start model its pretrained column
    md = (d / "tables" / "tow.md").read_text()
    assert "| FT | SGD |" in md and "| FT | SAM-min rho0.5 lamb1 |" in md


def test_split_seed_of_the_start_model_is_checked(work, capsys):
    code, out, err = _cli(work, capsys, main_forget, ["--unlearn", "FT", *FORGET, "--split_seed", "3", "--mask",
                                                      f"ckpts/original/{SGD_RUN}"])
    assert code == 2 and err.count("\n") == 1 and "--split_seed 3" in err and "--split_seed 1" in err, err


def test_a_second_concurrent_run_of_the_same_directory_is_refused(work, capsys):
    d, _ = work
    argv = ["--unlearn", "GA", *FORGET, "--unlearn_epochs", "1", "--mask", f"ckpts/original/{SGD_RUN}"]
    run_dir = d / "ckpts" / "unlearn" / FS / SGD_RUN / "GA_lr0.01_ep1_sgd_bs64" / "seed2"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = lock_path(run_dir)
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text(f"{holder.pid} {os.uname().nodename}")
        code, out, err = _cli(work, capsys, main_forget, argv)
        assert code == 2 and err.count("\n") == 1 and "being written by another run" in err and str(holder.pid) in err
        assert not run_dir.exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    code, out, err = _cli(work, capsys, main_forget, argv)  # the holder is gone: its lock is stale
    assert code == 0, err
    assert (run_dir / "metrics.json").is_file() and not lock_path(run_dir).exists()


def test_precision_bf16_on_the_cpu_is_another_run(work, capsys):
    d, _ = work
    code, out, err = _cli(work, capsys, main_train, TRAIN + ["--precision", "bf16"])
    assert code == 0, err
    run = d / "ckpts" / "original" / (SGD_RUN + "_bf16")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["identity"]["precision"] == "bf16" and cfg["identity"]["epochs"] == 3
    assert (d / "ckpts" / "original" / SGD_RUN / "metrics.json").is_file()
    a, b = _metrics(run), _metrics(d / "ckpts" / "original" / SGD_RUN)
    assert a["train_acc"] > 0.5 and a["history"][0]["train_loss"] != b["history"][0]["train_loss"]


def test_resume_with_another_recipe_is_refused(work, capsys):
    """A killed retrain (lr 0.1, 9 epochs) 'resumed' with other flags finds no checkpoint of its
    own settings: refused, naming the unfinished one, instead of starting a different run silently;
    the same for pretraining."""
    d, _ = work
    killed = d / "ckpts" / "unlearn" / FS / SGD_RUN / "retrain_lr0.1_ep9_bs64" / "seed2"
    killed.mkdir(parents=True)
    (killed / "checkpoint.pt").write_bytes(b"")
    code, out, err = _cli(work, capsys, main_forget, ["--unlearn", "retrain", *FORGET, "--unlearn_epochs", "9",
                                                      "--unlearn_lr", "0.5", "--mask", f"ckpts/original/{SGD_RUN}",
                                                      "--resume"])
    assert code == 2 and err.count("\n") == 1 and str(killed.relative_to(d)) in err and "--resume" in err, err
    pre = d / "ckpts" / "original" / SGD_RUN
    killed_pre = d / "ckpts" / "original" / (SGD_RUN + "_wd0.01")
    killed_pre.mkdir()
    (killed_pre / "config.json").write_text((pre / "config.json").read_text())
    (killed_pre / "checkpoint.pt").write_bytes(b"")
    code, out, err = _cli(work, capsys, main_train, TRAIN + ["--weight_decay", "0.02", "--resume"])
    assert code == 2 and err.count("\n") == 1 and "_wd0.01" in err, err
    assert not (d / "ckpts" / "original" / (SGD_RUN + "_wd0.02")).exists()
