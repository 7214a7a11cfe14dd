"""The per-epoch history in log.jsonl (iterative methods, retrain, each RUM step) and its optional
Weights & Biases mirror (a fake ``wandb`` module; none installed; not asked), end to end on digits."""
import json
import sys
import types

import pytest

import main_forget
import main_rum
from helpers import pretrained_workdir, run_cli
from utils.wandb_log import MISSING

PRETRAIN = ["--dataset", "digits", "--arch", "cnn_s", "--epochs", "2", "--lr", "0.1", "--batch_size", "256"]
RUN = "digits_cnn_s_sgd_ep2_lr0.1_bs256_seed2"
FORGET = [*PRETRAIN, "--num_indexes_to_replace", "60", "--mem", "high", "--unlearn_epochs", "2",
          "--unlearn_lr", "0.01"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return pretrained_workdir(tmp_path_factory.mktemp("history"), PRETRAIN)


class FakeRun:
    def __init__(self, kwargs):
        self.kwargs, self.logged, self.summary, self.finished = kwargs, [], {}, False

    def log(self, row):
        self.logged.append(dict(row))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    mod = types.ModuleType("wandb")
    mod.runs = []

    def init(**kwargs):
        mod.runs.append(FakeRun(kwargs))
        return mod.runs[-1]

    mod.init = init
    monkeypatch.setitem(sys.modules, "wandb", mod)
    return mod


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run_dir(workdir, method):
    return next((workdir / "ckpts" / "unlearn" / "digits_mem-high_n60" / RUN).glob(f"{method}_*")) / "seed2"


def test_ng_history_mirrored_to_a_fake_wandb(workdir, fake_wandb, monkeypatch, capsys):
    code, out, err = run_cli(main_forget, ["--unlearn", "NG", *FORGET, "--wandb-project", "proj",
                                           "--wandb-entity", "me"], monkeypatch, capsys, workdir)
    assert code == 0, err
    rows = _rows(_run_dir(workdir, "NG") / "log.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert {"epoch", "lr", "loss", "retain_acc", "forget_acc", "seconds"} <= set(r)
        assert 0 <= r["retain_acc"] <= 1 and 0 <= r["forget_acc"] <= 1 and r["lr"] == pytest.approx(0.01)
    (run,) = fake_wandb.runs
    assert run.kwargs["project"] == "proj" and run.kwargs["entity"] == "me" and run.kwargs["mode"] == "online"
    assert run.kwargs["group"] == "cnn_s-digits-NG" and run.kwargs["config"]["unlearn"] == "NG"
    assert run.logged == rows
    metrics = json.loads((_run_dir(workdir, "NG") / "metrics.json").read_text())
    assert run.summary["accuracy/forget"] == metrics["accuracy"]["forget"] and run.finished
    assert "wandb: logging to project proj" in out


def test_not_installed_is_one_line_and_the_run_goes_on(workdir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    code, out, err = run_cli(main_forget, ["--unlearn", "GA", *FORGET, "--wandb-project", "p"], monkeypatch,
                             capsys, workdir)
    assert code == 0, err
    assert out.count(MISSING) == 1
    assert [set(k for k in r if k.endswith("_acc")) for r in _rows(_run_dir(workdir, "GA") / "log.jsonl")] == \
        [{"forget_acc"}] * 2


def test_not_asked_or_disabled_means_no_wandb(workdir, fake_wandb, monkeypatch, capsys):
    for extra in ([], ["--wandb-mode", "disabled", "--wandb-project", "p"]):
        code, out, err = run_cli(main_forget, ["--unlearn", "FT", *FORGET, *extra, "--overwrite"], monkeypatch,
                                 capsys, workdir)
        assert code == 0, err
    assert fake_wandb.runs == []
    assert len(_rows(_run_dir(workdir, "FT") / "log.jsonl")) == 2


def test_retrain_keeps_its_log_and_mirrors_it(workdir, fake_wandb, monkeypatch, capsys):
    code, out, err = run_cli(main_forget, ["--unlearn", "retrain", *FORGET, "--wandb-mode", "offline"], monkeypatch,
                             capsys, workdir)
    assert code == 0, err
    rows = _rows(_run_dir(workdir, "retrain") / "log.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2] and "train_loss" in rows[0]
    (run,) = fake_wandb.runs
    assert run.kwargs["mode"] == "offline" and run.logged == rows and run.finished


def test_rum_writes_a_log_per_step(workdir, fake_wandb, monkeypatch, capsys):
    code, out, err = run_cli(main_rum, [*PRETRAIN, "--mem", "mix", "--num_indexes_to_replace", "60",
                                        "--rum_methods", "FT,none,NG", "--unlearn_epochs", "1",
                                        "--wandb-project", "rum"], monkeypatch, capsys, workdir)
    assert code == 0, err
    final = next((workdir / "ckpts" / "unlearn" / "digits_mem-mix_n60" / RUN).glob("RUM*")) / "seed2"
    ft, ng = _rows(final / "step0_FT" / "log.jsonl"), _rows(final / "step2_NG" / "log.jsonl")
    assert len(ft) == 1 and set(k for k in ft[0] if k.endswith("_acc")) == {"retain_acc"}
    assert len(ng) == 1 and {"retain_acc", "forget_acc"} <= set(ng[0])
    assert not (final / "step1_none" / "log.jsonl").exists()
    (run,) = fake_wandb.runs
    assert [sorted(r) for r in run.logged] == [sorted(f"step0/{k}" for k in ft[0]),
                                               sorted(f"step2/{k}" for k in ng[0])]
    assert run.finished and run.summary["method"] == "RUM"


def test_pretraining_history_mirrored_to_a_fake_wandb(tmp_path, fake_wandb, monkeypatch, capsys):
    import main_train

    code, out, err = run_cli(main_train, ["--dataset", "digits", "--arch", "mlp", "--epochs", "2",
                                          "--wandb-project", "proj"], monkeypatch, capsys, tmp_path)
    assert code == 0, err
    (run_dir,) = (tmp_path / "ckpts" / "original").iterdir()
    (run,) = fake_wandb.runs
    assert run.kwargs["group"] == "mlp-digits-pretrain" and run.kwargs["name"] == run_dir.name
    assert run.logged == _rows(run_dir / "log.jsonl") and len(run.logged) == 2
    assert run.summary["test_acc"] == json.loads((run_dir / "metrics.json").read_text())["test_acc"] and run.finished
