"""--resume continues exactly where a killed run stopped (DESIGN.md §5): on the CPU the resumed run
ends bitwise equal to a run that was never interrupted.

1. The real thing: main_train.py as a subprocess, SIGKILLed after its checkpoint of epoch k,
   rerun with --resume, compared with an uninterrupted run in another --save_dir.
2. In-process and deterministic: trainer.fit.fit interrupted by an exception after epoch k (and
   between the checkpoint and its log line), with SAM and with BatchNorm.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import trainer.fit as fit_mod
from helpers import script_cmd, script_env
from models import build_model
from trainer.fit import CHECKPOINT, Recipe, fit
from trainer.optim import SamConfig
from utils.data import load_data
from memorization.learning_events import LearningEvents

EPOCHS, KILL_AFTER = 5, 2
ARGS = ["--dataset", "digits", "--arch", "cnn_s", "--epochs", str(EPOCHS), "--batch_size", "128", "--lr", "0.05",
        "--warmup", "1", "--device", "cpu"]
RUN_NAME = "digits_cnn_s_sgd_ep5_lr0.05_bs128_seed2_warm1"


def _log_rows(run: Path) -> int:
    try:
        text = (run / "log.jsonl").read_text()
    except FileNotFoundError:
        return 0
    return text.count("\n")  # complete lines only


def _state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", map_location="cpu", weights_only=True)["state_dict"]


def test_sigkill_and_resume_is_bitwise_equal_to_uninterrupted(tmp_path):
    # One thread per process: the two runs share the 2 cores, and the thread count (which can change
    # the order of float reductions) is the same for every run.
    env = script_env(threads=1)
    ref = subprocess.Popen(script_cmd("main_train.py", *ARGS, "--save_dir", "ref"), cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(script_cmd("main_train.py", *ARGS, "--save_dir", "run"), cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "run" / RUN_NAME
    try:
        deadline = time.monotonic() + 240
        while _log_rows(run) < KILL_AFTER:  # the log line of epoch k follows its checkpoint
            assert victim.poll() is None, f"run ended early: {victim.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.01)
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    ck = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    k = int(ck["epoch"])
    assert KILL_AFTER <= k < EPOCHS, f"killed too late (checkpoint of epoch {k}); cannot test resume"
    assert not (run / "model.pt").exists() and not (run / "metrics.json").exists()

    # rerunning without --resume refuses to clobber the unfinished run
    r = subprocess.run(script_cmd("main_train.py", *ARGS, "--save_dir", "run"), cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--resume" in r.stderr, r.stderr
    r = subprocess.run(script_cmd("main_train.py", *ARGS, "--save_dir", "run", "--resume"), cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"at epoch {k}" in r.stdout
    assert ref.wait(timeout=300) == 0, ref.stderr.read()[-3000:]

    ref_run = tmp_path / "ref" / RUN_NAME
    a, b = _state(ref_run), _state(run)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert int(b["features.1.num_batches_tracked"]) == EPOCHS * 11  # 1297 train images / 128 -> 11 steps
    with np.load(ref_run / "outputs.npz") as oa, np.load(run / "outputs.npz") as ob:
        assert sorted(oa.files) == sorted(ob.files)
        for f in oa.files:
            assert np.array_equal(oa[f], ob[f]), f
    with np.load(ref_run / "proxies.npz") as pa, np.load(run / "proxies.npz") as pb:  # event sums resumed too
        for f in pa.files:
            assert np.array_equal(pa[f], pb[f], equal_nan=True), f
    ma = json.loads((ref_run / "metrics.json").read_text())
    mb = json.loads((run / "metrics.json").read_text())
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(ma["history"]) == strip(mb["history"])
    assert ma["test_acc"] == mb["test_acc"]
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, EPOCHS + 1))
    assert not (run / CHECKPOINT).exists()


# --- in process --------------------------------------------------------------------------------

class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def _model(data, arch):
    torch.manual_seed(0)
    return build_model(arch, data.num_classes, in_channels=1, image_size=8, mean=data.mean, std=data.std)


def _fit(data, arch, recipe, run_dir, resume=False):
    model = _model(data, arch)
    events = LearningEvents(len(data.x))
    hist = fit(model, data, data.train_ids[:320], recipe, seed=5, device=torch.device("cpu"), run_dir=run_dir,
               resume=resume, events=events, val_ids=data.val_ids[:40], log=lambda s: None)
    return model, events, hist


CASES = {
    "mlp-sam-adaptive": ("mlp", Recipe(epochs=4, lr=0.05, batch_size=32, warmup=1,
                                       sam=SamConfig("min", rho=0.5, lamb=0.8, adaptive=True))),
    "cnn_s-sgd": ("cnn_s", Recipe(epochs=4, lr=0.05, batch_size=64)),
    "mlp-sam-max-adamw": ("mlp", Recipe(epochs=3, lr=0.01, batch_size=50, optimizer="adamw",
                                        sam=SamConfig("max", rho=0.1, lamb=0.5))),
}


@pytest.mark.parametrize("where", ["after_log", "before_log"])
@pytest.mark.parametrize("case", list(CASES))
def test_fit_interrupted_and_resumed_is_bitwise_equal(tmp_path, monkeypatch, digits, case, where):
    arch, recipe = CASES[case]
    k = 2 if recipe.epochs > 3 else 1
    model_a, ev_a, hist_a = _fit(digits, arch, recipe, tmp_path / "a")

    if where == "after_log":  # dies at the start of epoch k + 1
        calls = []
        real = fit_mod.train_epoch

        def dying(*args, **kw):
            calls.append(1)
            if len(calls) > k:
                raise Interrupt
            return real(*args, **kw)

        monkeypatch.setattr(fit_mod, "train_epoch", dying)
    else:  # dies right after the checkpoint of epoch k is on disk, before its log line
        real_save = fit_mod.atomic_torch_save

        def dying_save(path, state):
            real_save(path, state)
            if state["epoch"] == k:
                raise Interrupt

        monkeypatch.setattr(fit_mod, "atomic_torch_save", dying_save)
    with pytest.raises(Interrupt):
        _fit(digits, arch, recipe, tmp_path / "b")
    monkeypatch.undo()
    torch.manual_seed(1234)  # whatever the global RNG holds now, resume restores it
    model_b, ev_b, hist_b = _fit(digits, arch, recipe, tmp_path / "b", resume=True)

    sa, sb = model_a.state_dict(), model_b.state_dict()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert torch.equal(ev_a.sums, ev_b.sums) and torch.equal(ev_a.counts, ev_b.counts)
    strip = lambda h: [{kk: v for kk, v in row.items() if kk != "seconds"} for row in h]  # noqa: E731
    assert strip(hist_a) == strip(hist_b) and len(hist_b) == recipe.epochs
    rows = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, recipe.epochs + 1))


def test_resume_without_checkpoint_starts_fresh(tmp_path, digits):
    recipe = Recipe(epochs=1, lr=0.05, batch_size=64)
    model_a, _, _ = _fit(digits, "mlp", recipe, tmp_path / "a")
    model_b, _, _ = _fit(digits, "mlp", recipe, tmp_path / "b", resume=True)
    for key, v in model_a.state_dict().items():
        assert torch.equal(v, model_b.state_dict()[key]), key
