"""analysis_audit.py end to end on a tiny digits run tree it builds (main_train.py, main_forget.py
retrain and FT for two seeds, a mix forget set over synthetic memorization scores): the refusal
without shadows, training them, the tables, reusing the stored shadows."""
import json

import numpy as np

import analysis_audit
import main_forget
import main_train
from evaluation.audits.lira import binomial_range
from helpers import run_cli

BASE = ["--dataset", "digits", "--arch", "mlp", "--epochs", "6", "--lr", "0.1", "--batch_size", "64",
        "--ckpts", "ckpts"]
FORGET = ["--num_indexes_to_replace", "60", "--mem", "mix"]


def _build_tree(tmp_path, monkeypatch, capsys):
    (tmp_path / "ckpts" / "memorization").mkdir(parents=True)
    np.savez(tmp_path / "ckpts" / "memorization" / "digits_memorization.npz",
             memorization=np.random.RandomState(0).rand(1437))
    for seed in ("2", "3"):
        b = [*BASE, "--seed", seed]
        assert run_cli(main_train, b, monkeypatch, capsys, tmp_path)[0] in (0, None)
        for extra in (["--unlearn", "retrain", "--unlearn_epochs", "6", "--unlearn_lr", "0.1"],
                      ["--unlearn", "FT", "--unlearn_epochs", "2", "--unlearn_lr", "0.01"]):
            code, out, err = run_cli(main_forget, [*b, *FORGET, *extra], monkeypatch, capsys, tmp_path)
            assert code in (0, None), err


def test_audit_end_to_end_on_digits(tmp_path, monkeypatch, capsys):
    _build_tree(tmp_path, monkeypatch, capsys)
    audit = ["--ckpts", "ckpts", "--dataset", "digits", "--num_shadows", "8", "--relearn_steps", "5"]

    # no shadows yet: one line naming the command that trains them, nothing written
    code, out, err = run_cli(analysis_audit, [*audit, "--audit", "lira"], monkeypatch, capsys, tmp_path)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "python analysis_audit.py --audit lira --train_shadows --num_shadows 8 --ckpts ckpts --dataset digits" in err
    assert not (tmp_path / "ckpts" / "analysis").exists()

    code, out, err = run_cli(analysis_audit, [*audit, "--train_shadows"], monkeypatch, capsys, tmp_path)
    assert code in (0, None), err
    assert "training 8 shadow models" in out
    shadow_files = list((tmp_path / "ckpts" / "audit").glob("shadows_digits_mlp_sgd_ep6_*.npz"))
    assert len(shadow_files) == 1
    out_dir = tmp_path / "ckpts" / "analysis"
    md = (out_dir / "audit.md").read_text()
    assert md in out and "## LiRA" in md and "## KLOM" in md and "## Relearning attack" in md
    js = json.loads((out_dir / "audit.json").read_text())
    try:
        import matplotlib  # noqa: F401
        assert (out_dir / "audit.png").is_file() and (out_dir / "audit.pdf").is_file()
    except ImportError:
        assert "matplotlib is not installed; no figure" in err and not (out_dir / "audit.png").exists()
    rows = {(r["audit"], r["tag"].split("_")[0], r["level"]): r for r in js["rows"]}
    for level in ("mix", "high", "mid", "low"):  # the mix set broken down by the groups it was cut from
        assert ("lira", "retrain", level) in rows and ("lira", "FT", level) in rows
    # the default pool (retrain): every shadow is a retrain of the forget set, OUT for every forget example;
    # no IN models, so no likelihood ratio
    ft = rows[("lira", "FT", "mix")]
    assert ft["seeds"] == [2, 3] and ft["cells"]["n"]["mean"] == 60 and ft["cells"]["median_log_lr"]["n"] == 0
    assert "_retrain60-" in shadow_files[0].name
    assert ("klom", "FT", "mix") in rows and ("klom", "retrain", "mix") not in rows
    assert rows[("klom", "FT", "mix")]["cells"]["retain_p50"]["mean"] >= 0
    assert ("relearn", "retrain", "mix") in rows and ("relearn", "FT", "mix") in rows
    assert js["settings"]["non_members"] == "test split"
    ex = np.load(out_dir / "audit_examples.npz")
    assert len([k for k in ex.files if k.endswith("_run")]) == 4 and ex["0_p"].shape == (60,)

    # calibration: the retrain's forget examples are rejected at about the level
    rt = rows[("lira", "retrain", "mix")]
    lo, hi = binomial_range(60, 0.05, 0.999)
    assert lo <= rt["cells"]["reject"]["mean"] <= hi
    calib = [n for n in js["notes"] if n.startswith("calibration: the retrain retrain_")]
    assert calib and all("shadows tested leave-one-out reject" in n and "the mean of 2 such models" in n for n in calib)

    # the stored shadows are reused; a filter keeps FT and its retrain control
    code, out, err = run_cli(analysis_audit, [*audit, "--audit", "lira", "--unlearn", "FT"], monkeypatch, capsys,
                             tmp_path)
    assert code in (0, None), err
    assert "training" not in out and list((tmp_path / "ckpts" / "audit").glob("*.npz")) == shadow_files
    tags = {r["tag"].split("_")[0] for r in json.loads((out_dir / "audit.json").read_text())["rows"]}
    assert tags == {"FT", "retrain"}

    # pool forget: each shadow leaves out a random half of F plus as many others; with 8 shadows an example
    # is left out by fewer than 2 of them now and then: it is left out (and said so); IN models give the ratio
    code, out, err = run_cli(analysis_audit, [*audit, "--audit", "lira", "--shadow_pool", "forget", "--train_shadows"],
                             monkeypatch, capsys, tmp_path)
    assert code in (0, None), err
    js = json.loads((out_dir / "audit.json").read_text())
    rows = {(r["tag"].split("_")[0], r["level"]): r for r in js["rows"]}
    assert 50 <= rows[("FT", "mix")]["cells"]["n"]["mean"] <= 60 and rows[("FT", "mix")]["cells"]["median_log_lr"]["n"]
    assert lo <= rows[("retrain", "mix")]["cells"]["reject"]["mean"] <= hi
    assert len(list((tmp_path / "ckpts" / "audit").glob("shadows_digits_mlp_sgd_ep6_*_pool120-*.npz"))) == 1

    # shadows of another pool do not match: refused, naming the command
    code, out, err = run_cli(analysis_audit, [*audit, "--audit", "lira", "--shadow_pool", "all"], monkeypatch, capsys,
                             tmp_path)
    assert code == 2 and "--train_shadows --num_shadows 8 --shadow_pool all" in err and "another pool" in err
