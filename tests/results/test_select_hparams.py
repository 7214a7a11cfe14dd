"""results/select.py (``--select random``): each method's hyperparameters chosen on the random
forget sets of the same size, never on the forget sets the table evaluates."""
import shutil

import numpy as np
import pytest

from fake_runs import QUICKSTART_LABELS, analyse, it, make_quickstart_like, write_run
from utils.errors import UserError

NG = {0.97: "NG_alpha0.97_lr0.01_ep3_sgd", 0.99: "NG_alpha0.99_lr0.01_ep3_sgd"}
RETRAIN = (1.0, 0.50, 0.90, 0.3)
# On the random sets alpha 0.97 is closer to retrain; on the evaluated mem-high set alpha 0.99 is.
RANDOM_ACC = {0.97: (1.0, 0.55, 0.90, 0.3), 0.99: (1.0, 0.80, 0.90, 0.3)}
HIGH_ACC = {0.97: (1.0, 0.90, 0.90, 0.3), 0.99: (1.0, 0.50, 0.90, 0.3)}


def _runs(root):
    for seed in (1, 2):
        for fs, kind, level, n, accs in (("digits_mem-high_n60", "mem", "high", 60, HIGH_ACC),
                                         (f"digits_random_n60_seed{seed}", "random", None, 60, RANDOM_ACC),
                                         (f"digits_random_n30_seed{seed}", "random", None, 30, HIGH_ACC)):
            d = root / kind
            kw = dict(forget_set=fs, seed=seed, kind=kind, level=level, n=n)
            write_run(d, method="retrain", tag="retrain", acc=RETRAIN, **kw)
            for a, tag in NG.items():
                write_run(d, method="NG", tag=tag, acc=accs[a], hparams=it(epochs=3, alpha=a), **kw)
            if kind == "mem":
                write_run(d, method="FT", tag="FT_lr0.01_ep5_sgd", acc=(1.0, 0.6, 0.9, 0.3), hparams=it(), **kw)
    return root


def test_select_random_picks_on_random_sets_only(tmp_path):
    root = _runs(tmp_path / "runs")
    plain = analyse(root, tmp_path / "plain")
    assert [r["label"] for r in plain["rows"]] == ["FT", "NegGrad+ (α=0.97)", "NegGrad+ (α=0.99)"]
    js = analyse(root, tmp_path / "out", "--select", "random")
    # one row per method; the random sets are the criterion's, not columns
    assert [(r["label"], r["method_tag"]) for r in js["rows"]] == [("FT", "FT_lr0.01_ep5_sgd"), ("NegGrad+", NG[0.97])]
    assert [c["key"] for c in js["columns"]] == ["mem-high_n60"]
    sel = js["selection"]
    assert sel["criterion"] == "random" and sel["forget_sets"] == ["random_n60"] and sel["sizes"] == [60]
    ng = [c for c in sel["choices"] if c["method"] == "NegGrad+"][0]
    # ToW on the random sets, by hand: alpha 0.97: (1 - 0.05) * 1 * 1; alpha 0.99: (1 - 0.30)
    assert ng["score"] == pytest.approx(0.95) and ng["n"] == 2
    assert {c["method_tag"]: c["score"] for c in ng["candidates"]} == pytest.approx({NG[0.97]: 0.95, NG[0.99]: 0.70})
    ft = [c for c in sel["choices"] if c["method"] == "FT"][0]
    assert ft["reason"] == "only setting" and ft["score"] is None
    md = (tmp_path / "out" / "tow.md").read_text()
    line = [ln for ln in md.splitlines() if ln.startswith("Selection (--select random)")]
    assert len(line) == 1 and f"NegGrad+ [unknown] → {NG[0.97]} (0.950 over 2 runs, of 2 settings); 1 with one" in line[0]
    # the chosen row's score is on the evaluated set: alpha 0.97 there is (1 - 0.40)
    cell = [c for c in js["cells"] if c["method_tag"] == NG[0.97]][0]
    assert cell["mean"] == pytest.approx(np.mean([0.6, 0.6]))


def test_select_random_without_random_runs_names_what_to_run(tmp_path):
    root = _runs(tmp_path / "runs")
    shutil.rmtree(root / "random")
    with pytest.raises(UserError) as e:
        analyse(root, tmp_path / "out", "--select", "random")
    msg = str(e.value)
    assert msg.startswith("--select random: no ToW-scored run on a random forget set of 60 examples for "
                          "NegGrad+ [unknown] (2 settings)")
    assert "--num_indexes_to_replace 60" in msg and "--unlearn retrain" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()


def test_select_random_one_setting_each_needs_no_random_runs(tmp_path):
    """The quickstart: every method (each RUM variant, its steps and grouping, counting as one) has
    one setting per start model, so nothing is chosen and no random run is needed."""
    js = analyse(make_quickstart_like(tmp_path / "runs"), tmp_path / "out", "--select", "random")
    assert [r["label"] for r in js["rows"]] == QUICKSTART_LABELS
    sel = js["selection"]
    assert all(c["reason"] == "only setting" for c in sel["choices"]) and len(sel["choices"]) == 14
    assert "no method had several settings; 14 with one setting kept as is." in sel["text"]
