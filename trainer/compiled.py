"""Opt-in ``torch.compile`` of the training model (``--compile``; DESIGN.md §5).

Only the training forward and backward run compiled; the module itself is never replaced: the
optimizer, the checkpoints (``state_dict`` keys without ``_orig_mod.``), evaluation and the saved
``model.pt`` all use the original module, which shares its parameters and buffers with the
compiled wrapper. Shapes are static (``dynamic=False``): a full batch and an epoch's short last
batch each compile once, and SAM's second pass (BatchNorm statistics frozen) once more.

When ``torch.compile`` cannot run here (no such function, Python unsupported by TorchDynamo, no
C++ compiler for the CPU backend, no Triton for CUDA) :func:`compile_for_training` says so in one
line and returns the module itself. A compilation that fails later, at the first step of an epoch
or at a recompilation, is caught by :func:`trainer.fit.fit`, which restores the state from before
the epoch, says so in one line and redoes the epoch without compiling."""
from __future__ import annotations

import shutil
from typing import Callable

import torch
from torch import nn


def compile_unavailable(device: torch.device | str) -> str | None:
    """Why ``torch.compile`` (inductor) cannot run on ``device`` here; None when it can."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        from torch._dynamo.eval_frame import is_dynamo_supported

        if not is_dynamo_supported():
            return "TorchDynamo does not support this Python"
    except Exception as e:  # noqa: BLE001 - an import failure is a reason, not a crash
        return f"TorchDynamo cannot be imported ({type(e).__name__}: {e})"
    kind = torch.device(device).type
    if kind == "cuda":
        try:
            from torch.utils._triton import has_triton

            if not has_triton():
                return "Triton (inductor's GPU code generator) is not installed"
        except Exception as e:  # noqa: BLE001
            return f"cannot check for Triton ({type(e).__name__}: {e})"
    elif kind == "cpu":
        return _no_cxx()
    return None


def _no_cxx() -> str | None:
    """None when inductor finds a C++ compiler for its CPU code, else the reason."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
        return None
    except ImportError:
        found = any(shutil.which(c) for c in ("g++", "c++", "clang++"))
        return None if found else "no C++ compiler (g++/clang++) found"
    except Exception as e:  # noqa: BLE001 - inductor's InvalidCxxCompiler and kin
        return f"no usable C++ compiler ({type(e).__name__}: {' '.join(str(e).split())[:160]})"


def compile_for_training(model: nn.Module, device: torch.device | str,
                         log: Callable[[str], None] = print) -> nn.Module:
    """``torch.compile(model, dynamic=False)`` for the training passes, or ``model`` itself (after
    one line through ``log``) when torch.compile cannot run here. Compilation happens lazily, at
    the first forward pass of each new shape."""
    why = compile_unavailable(device)
    if why is None:
        try:
            return torch.compile(model, dynamic=False)
        except Exception as e:  # noqa: BLE001
            why = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
    log(f"--compile: torch.compile is unavailable here ({why}); training without it")
    return model


def failure_line(e: BaseException) -> str:
    """The one line :func:`trainer.fit.fit` prints when a compiled epoch failed."""
    first = (" ".join(str(e).split()))[:200]
    return f"--compile: torch.compile failed ({type(e).__name__}: {first}); training without it"


def is_compiled(model: nn.Module) -> bool:
    return hasattr(model, "_orig_mod")
