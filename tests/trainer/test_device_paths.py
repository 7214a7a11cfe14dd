"""The CUDA branches of trainer/ whose only difference is the device, run on the CPU with a CUDA
``torch.device`` object (or a patched ``torch.cuda`` query): device and index choice, ``--precision
auto``, the ensemble's memory budget and batching decision, the compile availability check.
docs/BENCHMARKS.md ("What only a GPU can check") lists what stays GPU-only; bench/gpu_check.py
runs it."""
from __future__ import annotations

import pytest
import torch

import trainer.compiled as compiled
from trainer.device import autocast, device_from_args, resolve_device, resolve_precision, synchronize
from trainer.ensemble import batched_wins, memory_budget
from utils.errors import UserError

CUDA = torch.device("cuda")


def test_device_choice_and_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == CUDA
    assert device_from_args("cuda", gpu=1) == torch.device("cuda", 1)
    assert device_from_args("cuda", gpu=1, local_rank=3) == torch.device("cuda", 3)  # torchrun's LOCAL_RANK wins
    assert device_from_args("cuda:2", gpu=1, local_rank=3) == torch.device("cuda", 2)  # an explicit index stays
    assert device_from_args("cpu", gpu=1, local_rank=3) == torch.device("cpu")
    with pytest.raises(UserError, match="accepted: auto, cpu, cuda"):
        resolve_device("tpu")


def test_cuda_requested_without_cuda_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="CUDA is not available on this machine"):
        device_from_args("cuda:0")


def test_precision_auto_resolves_per_device():
    assert resolve_precision("auto", CUDA) == "bf16"
    assert resolve_precision("auto", torch.device("cuda", 1)) == "bf16"
    assert resolve_precision("AUTO", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"  # allowed on the CPU
    with pytest.raises(UserError, match="accepted: auto, fp32, bf16"):
        resolve_precision("fp16", CUDA)


def test_autocast_is_the_same_code_on_every_device():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert (a @ b).dtype == torch.float32
    with pytest.raises(ValueError, match="resolved precision"):
        autocast("cpu", "auto")
    synchronize(torch.device("cpu"))  # a no-op off CUDA


def test_ensemble_memory_budget_and_batching_decision(monkeypatch):
    assert memory_budget("cpu") == 2 << 30
    calls = []

    def free(dev):
        calls.append(dev)
        return (8 << 30, 80 << 30)

    monkeypatch.setattr(torch.cuda, "mem_get_info", free)
    assert memory_budget(CUDA) == 2 << 30 and calls == [CUDA]  # a quarter of the free memory
    assert batched_wins("cpu", 1.0, 2.0) and not batched_wins("cpu", 2.0, 1.0)
    assert batched_wins(CUDA, 2.0, 1.0)  # on an accelerator batching always wins


def test_compile_availability_per_device(monkeypatch):
    import torch.utils._triton as triton

    monkeypatch.setattr(triton, "has_triton", lambda: False)
    assert "Triton" in compiled.compile_unavailable(CUDA)
    monkeypatch.setattr(triton, "has_triton", lambda: True)
    assert compiled.compile_unavailable(CUDA) is None
    monkeypatch.setattr(compiled, "_no_cxx", lambda: "no C++ compiler (g++/clang++) found")
    assert compiled.compile_unavailable("cpu") == "no C++ compiler (g++/clang++) found"
