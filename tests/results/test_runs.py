"""results/runs.py on fake run directories: discovery, column labels, filters, one dataset and
one architecture per table."""
import json

import pytest

from utils.errors import UserError
from results.runs import column_label, discover
from fake_runs import analyse, cell, make_fake_runs, write_run


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return make_fake_runs(tmp_path_factory.mktemp("unlearn"))


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


def test_discover_skips_replacements_not_yet_in_place(tmp_path):
    """A killed --overwrite leaves its staging directory (.<run>.overwrite) beside the run: no run."""
    from results.runs import discover

    hidden = tmp_path / "fs" / "model" / "FT" / ".seed1.overwrite"
    hidden.mkdir(parents=True)
    (hidden / "metrics.json").write_text("{}")
    assert discover(tmp_path) == ([], [])
