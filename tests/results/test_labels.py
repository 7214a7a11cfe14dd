"""results/labels.py and the table's rows and columns: a row per (method, hyperparameters, start
model), labelled with the paper name and only the hyperparameters that differ among the method's
rows; the shared ones in a caption; columns low, mid, high, mix with their real sizes."""
import json

import pytest

from fake_runs import QUICKSTART_LABELS, analyse, it, make_quickstart_like, write_run
from results.labels import MAX_LABEL, RowSpec, fmt_item, label_rows, run_hparams


def _spec(row, method, hp, sam=None, pretrained="SGD"):
    return RowSpec(row, "NegGrad+" if method == "NG" else method, pretrained, run_hparams(method, hp, sam), row)


@pytest.mark.parametrize("key,a,b", [("alpha", 0.97, 0.99), ("lr", 0.01, 0.1), ("epochs", 3, 10),
                                     ("batch_size", 64, 128), ("optimizer", "sgd", "adamw"),
                                     ("weight_decay", 0.0005, 0.0), ("momentum", 0.9, 0.0),
                                     ("augment", True, False)])
def test_two_rows_differing_in_one_hyperparameter_differ_exactly_by_it(key, a, b):
    base = it(epochs=3, alpha=0.99)
    labels = label_rows([_spec("x", "NG", {**base, key: a}), _spec("y", "NG", {**base, key: b})])
    la, lb = labels.labels["x"], labels.labels["y"]
    assert la == f"NegGrad+ ({fmt_item(key, a)})" and lb == f"NegGrad+ ({fmt_item(key, b)})"
    assert la != lb and key not in " ".join(labels.shared["NegGrad+"])
    # the values every row shares are the caption's, not the label's
    shared = labels.shared["NegGrad+"]
    assert ("lr=0.01" in shared) == (key != "lr") and ("ep=3" in shared) == (key != "epochs")


def test_neggrad_alpha_label_and_sharp_minmax():
    sam = {"adaptive": True, "lamb": 1.0, "rho": 1.0, "separate": ["min", "max"], "sign": "min"}
    specs = [_spec("a", "NG", it(epochs=3, alpha=0.97)), _spec("b", "NG", it(epochs=3, alpha=0.99)),
             RowSpec("c", "Sharp MinMax", "SGD", run_hparams("NG", it(epochs=3, separate=["min", "max"]), sam)),
             RowSpec("d", "Sharp MinMax", "SAM", run_hparams("NG", it(epochs=3, separate=["min", "max"]), sam))]
    labels = label_rows(specs).labels
    assert labels == {"a": "NegGrad+ (α=0.97)", "b": "NegGrad+ (α=0.99)", "c": "Sharp MinMax", "d": "Sharp MinMax"}


def test_quickstart_labels_columns_and_caption(tmp_path):
    root = make_quickstart_like(tmp_path / "runs")
    js = analyse(root, tmp_path / "out", "--dataset", "digits")
    labels = [r["label"] for r in js["rows"]]
    assert labels == QUICKSTART_LABELS and max(map(len, labels)) <= MAX_LABEL
    assert [r["pretrained"] for r in js["rows"]][:2] == ["SGD", "SAM-min rho1 lamb1 adaptive"]
    # the method tag stays in the JSON (and CSV) to find the run directories; no '@recipe' in labels
    assert not any("@" in lab for lab in labels) and js["rows"][6]["method_tag"] == "NG_alpha0.99_sep"
    assert [c["header"] for c in js["columns"]] == ["low (n=90)", "mid (n=90)", "high (n=90)", "mix (n=77)"]
    md = (tmp_path / "out" / "tow.md").read_text()
    assert "| method | pretrained | low (n=90) | mid (n=90) | high (n=90) | mix (n=77) |" in md
    caption = [ln for ln in md.splitlines() if ln.startswith("Hyperparameters shared by every row")]
    assert len(caption) == 1 and "NegGrad+: α=0.99, lr=0.01, ep=3, opt=sgd, bs=64" in caption[0]
    assert "SalUn: mask largest 0.5, lr=0.01, ep=5" in caption[0]
    # the RUM rows differ in more than fits in 40 characters: the rest is listed under the table
    rum = [r for r in js["rows"] if r["paper_name"] == "RUM"]
    assert rum[0]["hidden"][0] == "proxy confidence" and "α=0.99/0.97/0.97" in rum[0]["hidden"]
    assert md.count("Every cell has one seed") == 1 and "1 seed, no interval" not in md


def test_rows_of_one_label_are_told_apart(tmp_path):
    """Two FT tags the hyperparameter record cannot tell apart (e.g. the precision): the labels
    carry the tag parts that differ."""
    kw = dict(forget_set="digits_mem-low_n60", seed=1, acc=(1, 0.9, 0.9, 0.2), level="low")
    write_run(tmp_path / "runs", method="retrain", tag="retrain", **kw)
    for tag in ("FT_lr0.01_ep5_sgd", "FT_lr0.01_ep5_sgd_bf16"):
        write_run(tmp_path / "runs", method="FT", tag=tag, hparams=it(), **kw)
    js = analyse(tmp_path / "runs", tmp_path / "out")
    assert sorted(r["label"] for r in js["rows"]) == ["FT", "FT [bf16]"]


def test_columns_low_mid_high_mix_then_other_kinds(tmp_path):
    """The mix holds fewer distinct examples (77 of n=90): it still comes after high, and its
    header gives the real number."""
    root = tmp_path / "runs"
    for fs, level, kind, n in (("digits_random_n90_seed1", None, "random", 90), ("digits_mem-mix_n90", "mix", "mem", 77),
                               ("digits_mem-high_n90", "high", "mem", 90), ("digits_mem-low_n90", "low", "mem", 90),
                               ("digits_mem-mid_n90", "mid", "mem", 90)):
        for method in ("retrain", "FT"):
            write_run(root, method=method, tag=method, forget_set=fs, seed=1, acc=(1, 0.9, 0.9, 0.2), level=level,
                      kind=kind, n=n)
    js = analyse(root, tmp_path / "out")
    assert [c["header"] for c in js["columns"]] == ["low (n=90)", "mid (n=90)", "high (n=90)", "mix (n=77)",
                                                    "random (n=90)"]
    assert json.loads((tmp_path / "out" / "tow.json").read_text())["columns"][3]["sizes"] == [77]
