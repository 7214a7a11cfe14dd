"""--compile (trainer/compiled.py, trainer.fit.fit(compile=True)): the compiled training run ends
close to the uncompiled one and saves unprefixed keys; when torch.compile is unavailable or fails,
one line says so and training goes on uncompiled, exactly as without --compile."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import trainer.compiled as compiled
from models import build_for
from trainer.device import prepare_model
from trainer.fit import CHECKPOINT, Recipe, fit
from utils.data import load_data

DEV = torch.device("cpu")
RECIPE = Recipe(epochs=1, lr=0.05, batch_size=128, augment=False)


@pytest.fixture(scope="module")
def data():
    return load_data("digits")


def _train(data, *, compile: bool, run_dir=None, epochs: int = 1, log=None):
    torch.manual_seed(0)
    model = prepare_model(build_for("mlp", data), DEV)
    lines: list[str] = []
    ids = data.train_ids[:1280]  # 10 full batches: one shape, one compilation
    hist = fit(model, data, ids, Recipe(**{**RECIPE.__dict__, "epochs": epochs}), seed=1, device=DEV,
               run_dir=run_dir, log=lines.append if log is None else log, compile=compile, val_ids=data.val_ids)
    return model, hist, lines


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_compiled_training_is_close_to_uncompiled(data, tmp_path):
    why = compiled.compile_unavailable(DEV)
    if why is not None:
        pytest.skip(f"torch.compile unavailable here: {why}")
    ref, ref_hist, _ = _train(data, compile=False)
    model, hist, lines = _train(data, compile=True, run_dir=tmp_path)
    if any(line.startswith("--compile:") for line in lines):  # e.g. the C++ compiler cannot build here
        pytest.skip(next(line for line in lines if line.startswith("--compile:")))
    assert not compiled.is_compiled(model)  # fit trains the module in place, never replaces it
    assert np.isfinite(hist[0]["train_loss"]) and 0 <= hist[0]["val_acc"] <= 1
    assert abs(hist[0]["train_loss"] - ref_hist[0]["train_loss"]) < 1e-3
    assert abs(hist[0]["val_acc"] - ref_hist[0]["val_acc"]) <= 0.03
    for k, v in _state(ref).items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-3, atol=1e-4, msg=k)
    ck = torch.load(tmp_path / CHECKPOINT, weights_only=True)["model"]
    assert set(ck) == set(ref.state_dict()) and not any(k.startswith("_orig_mod") for k in ck)


def test_unavailable_compile_is_one_line_and_trains_uncompiled(data, monkeypatch):
    monkeypatch.setattr(compiled, "compile_unavailable", lambda device: "no C++ compiler (g++/clang++) found")
    ref, ref_hist, _ = _train(data, compile=False)
    model, hist, lines = _train(data, compile=True)
    assert lines[0] == ("--compile: torch.compile is unavailable here (no C++ compiler (g++/clang++) found); "
                        "training without it")
    assert sum(line.startswith("--compile") for line in lines) == 1
    for k, v in _state(ref).items():
        assert torch.equal(model.state_dict()[k], v), k
    assert [h["train_loss"] for h in hist] == [h["train_loss"] for h in ref_hist]


class CppCompileError(RuntimeError):
    pass


class _FailsLater(nn.Module):
    """Stands in for a compiled module whose compilation fails at its ``fail_at``-th call, after
    earlier batches already moved the weights (a recompilation failing mid-epoch)."""

    def __init__(self, model: nn.Module, fail_at: int) -> None:
        super().__init__()
        self._orig_mod = model
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise CppCompileError("C++ compile error:\n  g++: fatal error")
        return self._orig_mod(x)


def test_failed_compilation_restores_the_epoch_and_goes_on_uncompiled(data, monkeypatch, tmp_path):
    monkeypatch.setattr(compiled, "compile_unavailable", lambda device: None)
    monkeypatch.setattr(compiled.torch, "compile", lambda model, **kw: _FailsLater(model, fail_at=4))
    from memorization.learning_events import LearningEvents

    runs = {}
    for name, comp in (("ref", False), ("fallback", True)):
        torch.manual_seed(0)
        model = prepare_model(build_for("mlp", data), DEV)
        events = LearningEvents(len(data.x), DEV)
        lines: list[str] = []
        hist = fit(model, data, data.train_ids, Recipe(epochs=2, lr=0.05, batch_size=128), seed=1, device=DEV,
                   events=events, log=lines.append, compile=comp, run_dir=tmp_path / name)
        runs[name] = (_state(model), hist, events.state_dict(), lines)
    ref, fb = runs["ref"], runs["fallback"]
    fails = [line for line in fb[3] if line.startswith("--compile:")]
    assert len(fails) == 1 and fails[0].startswith("--compile: torch.compile failed (CppCompileError: C++ compile error: g++")
    assert fails[0].endswith("training without it")
    for k, v in ref[0].items():  # bitwise: the failed epoch was redone from the state before it
        assert torch.equal(fb[0][k], v), k
    assert [h["train_loss"] for h in fb[1]] == [h["train_loss"] for h in ref[1]]
    assert all(torch.equal(fb[2][k], ref[2][k]) for k in ref[2])


def test_compile_flag_reaches_fit(monkeypatch, tmp_path):
    """main_train.py --compile: fit gets compile=True (the flag is result-neutral: same run directory)."""
    import main_train
    import stages.train as stage
    from arg_parser import parse_args
    from stages.configs import pretrain_dir

    seen = {}
    real_fit = stage.fit

    def spy(*a, **kw):
        seen["compile"] = kw.get("compile")
        kw["compile"] = False
        return real_fit(*a, **kw)

    monkeypatch.setattr(stage, "fit", spy)
    monkeypatch.chdir(tmp_path)
    argv = ["--dataset", "digits", "--arch", "mlp", "--epochs", "1", "--batch_size", "256", "--device", "cpu"]
    assert main_train.main([*argv, "--compile"]) == 0
    assert seen["compile"] is True
    assert pretrain_dir(parse_args([*argv, "--compile"])) == pretrain_dir(parse_args(argv))
