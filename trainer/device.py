"""Device choice and mixed precision (DESIGN.md §5): ``--device auto`` picks CUDA when present;
``--precision auto`` means bf16 autocast for training forward passes on CUDA and float32 on the CPU
(``bf16`` is allowed on the CPU too). Evaluation and every gradient used as a statistic run in
float32 whatever the precision. The model uses channels_last on every device: on the CPU too it
trains faster (bench/bench_train.py, docs/BENCHMARKS.md: ResNet-18 1.24x, cnn_s 1.2x per core)."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from utils.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: accepted: auto, cpu, cuda, cuda:N") from None


def device_from_args(name: str, gpu: int = 0, local_rank: int | None = None) -> torch.device:
    """``--device`` resolved; a bare ``cuda`` takes the index ``--gpu`` (``local_rank`` under torchrun)."""
    dev = resolve_device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", gpu if local_rank is None else local_rank)
    return dev


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(name: str, device: torch.device) -> str:
    """``--precision`` resolved on ``device``: ``auto`` -> ``bf16`` on CUDA, ``fp32`` elsewhere."""
    name = (name or "auto").lower()
    if name not in PRECISIONS:
        raise UserError(f"--precision {name!r}: accepted: {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return name


def autocast(device: torch.device | str, precision: str = "fp32"):
    """bf16 autocast on ``device`` when ``precision`` is ``bf16`` (a resolved precision); a no-op for ``fp32``."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision {precision!r}: expected a resolved precision, fp32 or bf16")
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA; a no-op elsewhere), so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    return model.to(device).to(memory_format=torch.channels_last)
