"""main_train.py (stages/train.py) end to end, as subprocesses in a temporary working directory.

The successful runs start together in one module fixture (one thread each, so they share the
cores) and each test checks one of them; bad inputs likewise. Every run's cwd is a fresh temporary
directory, so nothing lands in the repository.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import main_train
from helpers import run_cli, script_cmd, script_env
from models import build_model
from utils.data import load_data
from memorization.learning_events import PROXY_NAMES

README = ["--dataset", "CIFAR10", "--arch", "ResNet18", "--epochs", "1", "--lr", "0.1", "--batch_size", "16",
          "--save_dir", "ckpts/original/", "--data", "datasets"]  # the original README, verbatim
SAM = ["--sam", "min", "--rho", "1.0", "--lamb", "1", "--adaptive"]

RUNS = {
    # name: (arguments, run directory relative to the cwd)
    "digits30": (["--dataset", "digits", "--arch", "cnn_s", "--epochs", "30"],
                 "ckpts/original/digits_cnn_s_sgd_ep30_lr0.1_bs256_seed2"),
    "readme": (README, "ckpts/original/cifar10_resnet18_sgd_ep1_lr0.1_bs16_seed2"),
    "readme_sam": (README + SAM, "ckpts/original/cifar10_resnet18_sam-min_rho1_lamb1_adaptive_ep1_lr0.1_bs16_seed2"),
    "digits_resnet18": (["--dataset", "digits", "--arch", "resnet18", "--epochs", "1", "--ckpts", "out"],
                        "out/original/digits_resnet18_sgd_ep1_lr0.1_bs256_seed2"),
}


def run_many(jobs: dict[str, tuple[list[str], Path]], parallel: int = 4,
             timeout: float = 600) -> dict[str, subprocess.CompletedProcess]:
    """Run ``main_train.py args`` for every job (cwd given), ``parallel`` at a time, one thread each."""
    pending, running, done = list(jobs.items()), {}, {}
    deadline = time.monotonic() + timeout
    while pending or running:
        while pending and len(running) < parallel:
            name, (args, cwd) = pending.pop(0)
            cmd = script_cmd("main_train.py", *args)
            running[name] = (cmd, subprocess.Popen(cmd, cwd=cwd, env=script_env(threads=1), text=True,
                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for name, (cmd, p) in list(running.items()):
            if p.poll() is not None or time.monotonic() > deadline:
                if p.poll() is None:
                    p.kill()
                out, err = p.communicate()
                done[name] = subprocess.CompletedProcess(cmd, p.returncode, out, err)
                del running[name]
        time.sleep(0.05)
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cifar_data):
    root, _ = cifar_data
    jobs = {}
    for name, (args, _) in RUNS.items():
        cwd = tmp_path_factory.mktemp(name)
        (cwd / "datasets").symlink_to(root, target_is_directory=True)
        jobs[name] = (args, cwd)
    done = run_many(jobs)
    return {name: (done[name], jobs[name][1] / RUNS[name][1]) for name in RUNS}


def _ok(runs, name):
    r, run_dir = runs[name]
    assert r.returncode == 0, f"{name} failed:\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr[-3000:]
    return run_dir


def _check_run_dir(run_dir: Path, dataset: str, data_root: Path | None, epochs: int, arch: str):
    files = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "model.pt", "metrics.json", "outputs.npz", "proxies.npz", "log.jsonl"} <= files
    assert "checkpoint.pt" not in files and not any(f.endswith(".tmp") for f in files)
    data = load_data(dataset, data_root or "datasets")
    n_train, n_val, n_test = len(data.train_ids), len(data.val_ids), len(data.test_y)

    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["args"]["dataset"] == dataset and cfg["args"]["arch"] == arch
    assert cfg["args"]["epochs"] == epochs and "torch" in cfg["versions"]

    with np.load(run_dir / "outputs.npz", allow_pickle=False) as o:
        assert set(o.files) == {f"{s}_{k}" for s in ("train", "val", "test") for k in ("ids", "logits", "labels")}
        assert np.array_equal(o["train_ids"], data.train_ids) and np.array_equal(o["val_ids"], data.val_ids)
        assert np.array_equal(o["test_ids"], np.arange(n_test))
        for s, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            assert o[f"{s}_logits"].shape == (n, data.num_classes) and o[f"{s}_logits"].dtype == np.float32
            assert np.isfinite(o[f"{s}_logits"]).all()
        assert np.array_equal(o["train_labels"], data.labels(data.train_ids))
        assert np.array_equal(o["test_labels"], data.test_y.numpy())
        test_acc = float((o["test_logits"].argmax(1) == o["test_labels"]).mean())

    with np.load(run_dir / "proxies.npz", allow_pickle=False) as p:
        assert set(p.files) == {"ids", *PROXY_NAMES}
        assert np.array_equal(p["ids"], data.train_ids)
        for k in PROXY_NAMES:
            assert p[k].shape == (n_train,) and np.isfinite(p[k]).all(), k  # every example was seen
        assert ((p["confidence"] >= 0) & (p["confidence"] <= p["max_conf"] + 1e-12)).all()
        assert ((p["bi_acc"] >= 0) & (p["bi_acc"] <= 1)).all() and (p["entropy"] <= 1e-9).all()

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_acc"] == pytest.approx(test_acc)
    assert len(metrics["history"]) == epochs
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))

    state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    model = build_model(arch, data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                        mean=data.mean, std=data.std)
    model.load_state_dict(state["state_dict"], strict=True)
    return metrics, cfg


def test_digits_cnn_s_30_epochs_reaches_95_percent(runs):
    run_dir = _ok(runs, "digits30")
    metrics, _ = _check_run_dir(run_dir, "digits", None, 30, "cnn_s")
    assert metrics["test_acc"] >= 0.95, metrics["test_acc"]


@pytest.mark.parametrize("name", ["readme", "readme_sam"])
def test_readme_pretraining_command_on_cifar10(runs, cifar_data, name):
    run_dir = _ok(runs, name)
    _, cfg = _check_run_dir(run_dir, "cifar10", cifar_data[0], 1, "resnet18")
    a = cfg["args"]
    assert (a["lr"], a["batch_size"]) == (0.1, 16)
    if name == "readme_sam":
        assert (a["sam"], a["rho"], a["lamb"], a["adaptive"]) == ("min", 1.0, 1.0, True)
    else:
        assert a["sam"] is None


def test_resnet18_trains_on_digits(runs):
    run_dir = _ok(runs, "digits_resnet18")
    _check_run_dir(run_dir, "digits", None, 1, "resnet18")


def test_finished_run_is_not_overwritten(runs, run_script):
    """A second identical command is a no-op (exit 0, one line saying where) and leaves the result
    alone; other settings (--momentum) are another run in another directory; a directory whose
    config.json records another identity is refused (exit 2, one line)."""
    r0, run_dir = runs["digits_resnet18"]
    assert r0.returncode == 0
    before = (run_dir / "model.pt").read_bytes()
    r = run_script("main_train.py", *RUNS["digits_resnet18"][0], cwd=run_dir.parents[2])
    assert r.returncode == 0 and "already holds this finished run" in r.stdout and r.stderr == "", r.stderr
    r = run_script("main_train.py", *RUNS["digits_resnet18"][0], "--momentum", "0.5", cwd=run_dir.parents[2])
    assert r.returncode == 0, r.stderr
    assert (run_dir.parent / (run_dir.name + "_mom0.5") / "metrics.json").is_file()
    assert (run_dir / "model.pt").read_bytes() == before
    cfg_file = run_dir / "config.json"
    saved = cfg_file.read_text()
    cfg = json.loads(saved)
    cfg["identity"]["weight_decay"] = 0.01
    cfg_file.write_text(json.dumps(cfg))
    try:
        r = run_script("main_train.py", *RUNS["digits_resnet18"][0], cwd=run_dir.parents[2])
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "weight_decay 0.01 there vs 0.0005 here" in r.stderr
    finally:
        cfg_file.write_text(saved)
    assert (run_dir / "model.pt").read_bytes() == before


# --- bad input ---------------------------------------------------------------------------------

BAD = {
    # name: (arguments, the flag the one-line message must name)
    "dataset": (["--dataset", "mnist"], "--dataset"),
    "arch": (["--dataset", "digits", "--arch", "resnet999"], "--arch"),
    "data_missing": (["--dataset", "cifar10", "--data", "empty"], "--data"),
    "epochs": (["--dataset", "digits", "--arch", "mlp", "--epochs", "0"], "--epochs"),
    "rho": (["--dataset", "digits", "--arch", "mlp", "--sam", "min", "--rho", "-1"], "--rho"),
    "sam": (["--dataset", "digits", "--arch", "mlp", "--sam", "foo"], "--sam"),
    "save_dir_under_file": (["--dataset", "digits", "--arch", "mlp", "--save_dir", "a_file/runs"], "--save_dir"),
    "checkpoint_without_one": (["--dataset", "digits", "--arch", "mlp", "--resume", "--checkpoint", "empty"],
                               "--checkpoint"),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    jobs = {}
    for name, (args, _) in BAD.items():
        cwd = tmp_path_factory.mktemp(f"bad_{name}")
        (cwd / "empty").mkdir()
        (cwd / "a_file").write_text("not a directory\n")
        # every run writes (if it wrongly writes) under its cwd: ckpts/ by default, or --save_dir
        jobs[name] = (args + ["--device", "cpu"], cwd)
    done = run_many(jobs)
    return {name: (done[name], jobs[name][1]) for name in BAD}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_one_line_exit_2_nothing_written(bad_runs, name):
    r, cwd = bad_runs[name]
    flag = BAD[name][1]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and r.stderr.endswith("\n"), r.stderr
    assert lines[0].startswith("main_train.py: error: ") and flag in lines[0], lines[0]
    assert r.stdout == ""
    # nothing was created: the cwd holds only what the test put there
    assert sorted(p.name for p in cwd.iterdir()) == ["a_file", "empty"]
    assert list((cwd / "empty").iterdir()) == [] and (cwd / "a_file").is_file()


# --- resume refusals (in process) ----------------------------------------------------------------

RESUME_BASE = ["--dataset", "digits", "--arch", "mlp", "--epochs", "2", "--batch_size", "64", "--device", "cpu"]
MLP_RUN = "digits_mlp_sgd_ep2_lr0.1_bs64_seed2"


def _snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(tmp_path, monkeypatch, capsys, argv, *texts):
    before = _snapshot(tmp_path)
    code, out, err = run_cli(main_train, argv, monkeypatch, capsys, tmp_path)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert all(t in err for t in texts), err
    assert _snapshot(tmp_path) == before


def test_checkpoint_naming_another_run_is_refused(tmp_path, monkeypatch, capsys):
    """--checkpoint DIR holding another run's files never makes that run's directory the output."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"run_name": "digits_cnn_s_sgd_ep9_lr0.1_bs64_seed2"}))
    _refused(tmp_path, monkeypatch, capsys, [*RESUME_BASE, "--checkpoint", str(other)], "--checkpoint",
             "digits_cnn_s_sgd_ep9_lr0.1_bs64_seed2", "another directory")


def test_resume_of_a_finished_run_says_so(tmp_path, monkeypatch, capsys):
    """--resume on a finished run is a no-op that says so (a rerun after a kill between the run's
    end and a script's own bookkeeping); nothing is rewritten."""
    assert run_cli(main_train, RESUME_BASE, monkeypatch, capsys, tmp_path)[0] == 0
    before = _snapshot(tmp_path)
    code, out, err = run_cli(main_train, [*RESUME_BASE, "--resume"], monkeypatch, capsys, tmp_path)
    assert code == 0 and "already holds this finished run" in out and err == ""
    assert _snapshot(tmp_path) == before


def test_resume_without_a_checkpoint_starts_from_the_beginning(tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(main_train, [*RESUME_BASE, "--resume"], monkeypatch, capsys, tmp_path)
    assert code == 0 and "starting from the beginning" in out
    assert (tmp_path / "ckpts" / "original" / MLP_RUN / "metrics.json").is_file()


def test_resume_of_another_recipe_is_refused(tmp_path, monkeypatch, capsys):
    run = tmp_path / "ckpts" / "original" / "digits_cnn_s_sgd_ep2_lr0.1_bs64_seed2"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"run_name": run.name}))
    (run / "checkpoint.pt").write_bytes(b"x")
    _refused(tmp_path, monkeypatch, capsys, [*RESUME_BASE, "--resume", "--checkpoint", str(run)],
             "--checkpoint", "digits_cnn_s_sgd_ep2_lr0.1_bs64_seed2", "other settings")


def test_corrupt_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    run = tmp_path / "ckpts" / "original" / MLP_RUN
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"run_name": MLP_RUN}))
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    _refused(tmp_path, monkeypatch, capsys, [*RESUME_BASE, "--resume"], "--resume", "checkpoint.pt", "damaged")


def test_output_made_read_only_mid_run_is_one_line(tmp_path, monkeypatch, capsys):
    """The run directory refusing writes after training (read-only, full) ends in one line and exit
    status 1, not a traceback. (Simulated: this machine runs the tests as root, whom chmod does not stop.)"""
    import errno

    import stages.train

    def refused(run_dir, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(run_dir / "model.pt"))

    monkeypatch.setattr(stages.train, "save_model", refused)
    code, out, err = run_cli(main_train, RESUME_BASE, monkeypatch, capsys, tmp_path)
    assert code == 1 and err.count("\n") == 1 and "cannot write" in err and "model.pt" in err


def test_a_rerun_compares_only_the_flags_pretraining_reads(tmp_path, monkeypatch, capsys):
    """An unlearning flag on the command line does not make a finished pretraining another run;
    another weight decay is another run, in its own directory."""
    assert run_cli(main_train, RESUME_BASE, monkeypatch, capsys, tmp_path)[0] == 0
    code, out, err = run_cli(main_train, [*RESUME_BASE, "--unlearn_lr", "0.5", "--mem", "high"], monkeypatch,
                             capsys, tmp_path)
    assert code == 0 and "already holds this finished run" in out
    code, out, err = run_cli(main_train, [*RESUME_BASE, "--weight_decay", "0"], monkeypatch, capsys, tmp_path)
    assert code == 0 and "already holds" not in out and out.rstrip().endswith("_wd0"), out


@pytest.mark.parametrize("dataset", ["cifar100", "cifar10"])
def test_cifar_pretraining_records_its_augmentation(cifar_data, tmp_path, monkeypatch, capsys, dataset):
    """A CIFAR-100 run records RandAugment(2, 15) after crop and flip in its config.json (and trains
    with it); CIFAR-10 records crop and flip only; --no_aug records none."""
    root, _ = cifar_data
    argv = ["--dataset", dataset, "--data", str(root), "--arch", "resnet20s", "--epochs", "1", "--batch_size", "50"]
    for extra in ([], ["--no_aug"]):
        code, out, err = run_cli(main_train, argv + extra, monkeypatch, capsys, tmp_path)
        assert code == 0, err
        (run,) = [d for d in (tmp_path / "ckpts" / "original").iterdir() if d.name.endswith("noaug") == bool(extra)]
        cfg = json.loads((run / "config.json").read_text())
        if extra:
            assert cfg["augmentation"] is None and cfg["identity"]["augment"] is False
            continue
        aug = cfg["augmentation"]
        assert aug["random_crop_padding"] == 4 and aug["horizontal_flip"] is True
        if dataset == "cifar100":
            assert aug["randaugment"] == {"num_ops": 2, "magnitude": 15, "num_magnitude_bins": 31,
                                          "interpolation": "nearest", "fill": 0}
        else:
            assert aug["randaugment"] is None
