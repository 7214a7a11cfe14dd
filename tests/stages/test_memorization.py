"""main_memorization.py (stages/memorization.py) end to end on digits (tiny: a few mlp models, one
epoch), in process; and the summary's group means and Spearman correlation."""
import json

import numpy as np
import pytest

from helpers import exit_code

import main_memorization
import stages.memorization as stage
from arg_parser import parse_args
from models import build_model
from utils.rundir import save_model
from utils.data import load_data
from memorization.estimator import load_progress, save_progress, score_path, shard_path, summary_path
from memorization.scores import load_scores
from stages.configs import default_pretrained


@pytest.fixture(scope="module")
def data():
    return load_data("digits")


@pytest.fixture(autouse=True)
def _keep_threads(monkeypatch):
    monkeypatch.setattr(stage, "cpu_threads", lambda device: None)


def _args(tmp_path, *extra, models=4):
    return ["--dataset", "digits", "--arch", "mlp", "--epochs", "1", "--batch_size", "64", "--num_models",
            str(models), "--ckpts", str(tmp_path), *extra]


def run(monkeypatch, argv):
    return exit_code(main_memorization, argv, monkeypatch)


def _error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("main_memorization.py: error:")
    return err


def test_estimator_writes_scores_and_summary(tmp_path, monkeypatch, capsys, data):
    argv = _args(tmp_path)
    run_dir = default_pretrained(parse_args(argv))
    run_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(run_dir / "proxies.npz", ids=data.train_ids, confidence=rng.random(len(data.train_ids)))
    assert run(monkeypatch, argv) == 0
    out = capsys.readouterr().out
    assert "models 4/4 done" in out and "high group" in out and "Spearman(memorization, confidence)" in out
    mdir = tmp_path / "memorization"
    scores = load_scores(score_path(mdir, "digits"), None, len(data.x))  # readable by every stage
    with np.load(score_path(mdir, "digits")) as z:
        valid, masks, correct = z["valid"], z["subset_masks"], z["correct"]
        manifest = json.loads(str(z["manifest"][()]))
    assert masks.shape == correct.shape == (4, len(data.x))
    assert not valid[data.val_ids].any() and np.all(scores[data.val_ids] == 0.0)
    assert manifest["arch"] == "mlp" and manifest["num_models"] == 4 and manifest["augment"] is False
    summary = json.loads(summary_path(mdir, "digits").read_text())
    assert set(summary["group_means"]) == {"high", "mid", "low"}
    assert summary["group_size"] == len(data.train_ids) // 10
    assert summary["spearman"]["confidence"]["count"] == int(valid.sum())
    assert not shard_path(mdir, "digits", 0, 1).exists()  # the single-process progress file is gone
    # rerunning the same command is a no-op (exit 0, the scores untouched); other settings are refused
    before = score_path(mdir, "digits").read_bytes()
    capsys.readouterr()
    assert run(monkeypatch, argv) == 0
    assert "already holds these memorization scores" in capsys.readouterr().out
    assert score_path(mdir, "digits").read_bytes() == before
    assert run(monkeypatch, [*argv, "--subset_ratio", "0.5"]) == 2
    assert "other settings" in _error(capsys) and score_path(mdir, "digits").read_bytes() == before


def test_shards_merge_like_a_single_run(tmp_path, monkeypatch, capsys):
    one, many = tmp_path / "one", tmp_path / "many"
    assert run(monkeypatch, _args(one)) == 0
    assert run(monkeypatch, _args(many, "--merge", "--num_shards", "2")) == 2
    assert "shards 0, 1 of 2" in _error(capsys)
    assert run(monkeypatch, _args(many, "--shard", "0", "--num_shards", "2")) == 0
    assert run(monkeypatch, _args(many, "--merge", "--num_shards", "2")) == 2
    assert "shard 1 of 2" in _error(capsys)
    assert run(monkeypatch, _args(many, "--shard", "1", "--num_shards", "2")) == 0
    # a shard file missing a model: merge names it
    f1 = shard_path(many / "memorization", "digits", 1, 2)
    p = load_progress(f1)
    p.done[3] = False
    save_progress(f1, p)
    assert run(monkeypatch, _args(many, "--merge", "--num_shards", "2")) == 2
    assert "models 3 " in _error(capsys)
    p.done[3] = True
    save_progress(f1, p)
    capsys.readouterr()
    assert run(monkeypatch, _args(many, "--merge", "--num_shards", "2")) == 0
    assert "merged 2 shards" in capsys.readouterr().out
    with np.load(score_path(one / "memorization", "digits")) as a, \
            np.load(score_path(many / "memorization", "digits")) as b:
        assert np.array_equal(a["seeds"], b["seeds"]) and np.array_equal(a["subset_masks"], b["subset_masks"])
        # the same models, trained in other ensembles: equal up to float summation order
        assert (a["correct"] == b["correct"]).mean() > 0.99


def test_resume_trains_only_unfinished_models(tmp_path, monkeypatch, capsys):
    argv = _args(tmp_path, "--shard", "0", "--num_shards", "1")
    assert run(monkeypatch, argv) == 0
    f = shard_path(tmp_path / "memorization", "digits", 0, 1)
    p = load_progress(f)
    assert p.done.all()
    kept = p.correct[0].copy()
    p.done[[1, 2]] = False
    save_progress(f, p)
    trained = []
    real = stage.train_models

    def counting(models, *a, **kw):
        trained.append(len(models))
        return real(models, *a, **kw)

    monkeypatch.setattr(stage, "train_models", counting)
    assert run(monkeypatch, argv) == 0
    assert trained == [2] and "2 already done" in capsys.readouterr().out
    p = load_progress(f)
    assert p.done.all() and np.array_equal(p.correct[0], kept)
    # a progress file of other settings is refused, not mixed
    assert run(monkeypatch, _args(tmp_path, "--shard", "0", "--num_shards", "1", "--lr", "0.05")) == 2
    assert "other settings" in _error(capsys)


def test_bad_flags(tmp_path, monkeypatch, capsys):
    for extra, want in ((["--shard", "5", "--num_shards", "2"], "--shard 5"),
                        (["--proxies", "ho_ret,foo"], "--proxies 'foo'"),
                        (["--proxies", "confidence"], "main_train.py"),
                        (["--num_shards", "3"], "without --shard"),
                        (["--merge", "--shard", "0", "--num_shards", "2"], "--merge")):
        assert run(monkeypatch, _args(tmp_path, *extra)) == 2
        assert want in _error(capsys)
    assert not (tmp_path / "memorization").exists() or not any((tmp_path / "memorization").iterdir())


def test_proxies(tmp_path, monkeypatch, capsys, data):
    argv = _args(tmp_path, models=2)
    assert run(monkeypatch, argv + ["--proxies", "ho_ret"]) == 2  # no pretrained model yet
    assert "main_train.py" in _error(capsys)
    assert run(monkeypatch, argv) == 0
    model = build_model("mlp", 10, in_channels=1, image_size=8, mean=data.mean, std=data.std)
    save_model(default_pretrained(parse_args(argv)), model, arch="mlp", num_classes=10, dataset="digits")
    capsys.readouterr()
    assert run(monkeypatch, argv + ["--proxies", "ho_ret,curvature", "--ft_epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "Spearman(memorization, ho_ret)" in out and "Spearman(memorization, curvature)" in out
    f = tmp_path / "memorization" / "digits_mlp_proxies.npz"
    with np.load(f) as z:
        assert np.array_equal(z["ids"], data.train_ids)
        assert z["ho_ret"].shape == z["curvature"].shape == (len(data.train_ids),)
        assert z["curvature_epochs"].shape == (1, len(data.train_ids))
        assert np.isfinite(z["ho_ret"]).all() and np.isfinite(z["curvature"]).all()
        meta = json.loads(str(z["proxy_manifest"][()]))
        assert meta["ho_ret"]["holdout"] == "test" and meta["curvature"]["h"] == 0.01
    assert run(monkeypatch, argv + ["--proxies", "curvature"]) == 2
    assert "already holds curvature" in _error(capsys)
