"""Test helpers shared by several test files (imported as ``helpers``; tests/ is on sys.path)."""
from __future__ import annotations

import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


# --- CIFAR in the python-version archive format -----------------------------------------------------

class _Py2Str(bytes):
    """A Python 2 ``str``: pickled as (SHORT_)BINSTRING, as in the real CIFAR files, so that
    ``pickle.load(encoding="bytes")`` yields ``b"data"`` keys and ``encoding="latin1"`` yields ``"data"``."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table is extensible
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + bytes(obj))
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + bytes(obj))

    dispatch[_Py2Str] = _save_py2str


def _dump(path: Path, obj: dict) -> None:
    def conv(v):
        if isinstance(v, str):
            return _Py2Str(v.encode())
        if isinstance(v, list):
            return [conv(t) for t in v]
        return v

    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump({_Py2Str(k.encode()): conv(v) for k, v in obj.items()})


def _balanced_labels(n: int, num_classes: int, rng: np.random.RandomState) -> list[int]:
    return [int(v) for v in rng.permutation(np.arange(n) % num_classes)]


def write_cifar(root: Path, *, hundred: bool = False, per_file: int = 20, n_test: int = 20,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny CIFAR-10 (``data_batch_1..5``, ``test_batch``, ``batches.meta``) or CIFAR-100
    (``train``, ``test``, ``meta``) under ``root`` in torchvision's layout; returns the arrays
    written (``x`` uint8 [N,3,32,32], ``y``, ``test_x``, ``test_y``) for comparison."""
    rng = np.random.RandomState(seed)
    num_classes = 100 if hundred else 10
    folder = root / ("cifar100/cifar-100-python" if hundred else "cifar10/cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    key = "fine_labels" if hundred else "labels"

    def batch(n: int, name: str) -> tuple[np.ndarray, list[int]]:
        data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        labels = _balanced_labels(n, num_classes, rng)
        d = {"batch_label": name, "data": data, key: labels,
             "filenames": [f"img_{name}_{i}.png" for i in range(n)]}
        if hundred:
            d["coarse_labels"] = [c // 5 for c in labels]
        _dump(folder / name, d)
        return data, labels

    if hundred:
        xs, ys = batch(per_file, "train")
        tx, ty = batch(n_test, "test")
        _dump(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)],
                                "coarse_label_names": [f"super{i}" for i in range(20)]})
    else:
        parts = [batch(per_file, f"data_batch_{i}") for i in range(1, 6)]
        xs = np.concatenate([p[0] for p in parts])
        ys = sum((p[1] for p in parts), [])
        tx, ty = batch(n_test, "test_batch")
        _dump(folder / "batches.meta", {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                        "frog", "horse", "ship", "truck"],
                                        "num_cases_per_batch": per_file, "num_vis": 3072})
    return {"x": xs.reshape(-1, 3, 32, 32), "y": np.asarray(ys, np.int64),
            "test_x": tx.reshape(-1, 3, 32, 32), "test_y": np.asarray(ty, np.int64)}


# --- entry scripts as subprocesses ---------------------------------------------------------------

def script_env(threads: int | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def script_cmd(script: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / script), *map(str, args)]


def run_cli(module, argv, monkeypatch, capsys, cwd) -> tuple[int, str, str]:
    """Run an entry script in-process exactly as ``python <script> argv`` does (``utils.cli.run_main``
    in ``cwd``); returns ``(exit status, stdout, stderr)``."""
    import pytest

    from utils.cli import run_main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *[str(a) for a in argv]])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_main(module.main)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def state_copy(model) -> dict:
    """A detached CPU copy of the model's state (for comparisons)."""
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def pretrained_workdir(d: Path, train_argv: list[str]) -> Path:
    """``d`` holding a model pretrained by ``main_train.py train_argv`` (a subprocess, one thread)
    and a synthetic digits score file ``ckpts/memorization/digits_memorization.npz``."""
    import subprocess

    subprocess.run([sys.executable, str(REPO / "main_train.py"), *train_argv], cwd=d, check=True,
                   capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    (d / "ckpts" / "memorization").mkdir(parents=True)
    np.savez(d / "ckpts" / "memorization" / "digits_memorization.npz",
             memorization=np.random.RandomState(0).rand(1437))
    return d


def exit_code(module, argv, monkeypatch) -> int:
    """Run an entry script in-process as ``python <script> argv``; its exit status."""
    import pytest

    from utils.cli import run_main

    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *[str(a) for a in argv]])
    with pytest.raises(SystemExit) as e:
        run_main(module.main)
    return e.value.code or 0


# A toy unlearning problem on 8x8 single-channel images (tests/unlearn): 48 examples of 3 classes,
# every 4th one forgotten.
TOY_C, TOY_N = 3, 48
TOY_FORGET = np.arange(0, TOY_N, 4, dtype=np.int64)  # 12 examples
TOY_RETAIN = np.setdiff1d(np.arange(TOY_N), TOY_FORGET)


def toy_data(seed: int = 0, name: str = "digits"):
    """Random uint8 images and labels as an :class:`utils.data.ImageData` (6 test images)."""
    import torch

    from utils.data import ImageData

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (TOY_N, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, TOY_C, (TOY_N,), generator=g)
    return ImageData(name, x, y, x[:6].clone(), y[:6].clone(), TOY_C, np.arange(TOY_N, dtype=np.int64),
                     np.zeros(0, np.int64), mean=(0.5,), std=(0.25,))


def toy_model(arch: str = "mlp", seed: int = 0):
    import torch

    from models import build_model

    torch.manual_seed(seed)
    return build_model(arch, TOY_C, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,))


def toy_task(model, data, seed: int = 0):
    import torch

    from unlearn.base import UnlearnTask

    return UnlearnTask(model, data, TOY_FORGET, TOY_RETAIN, torch.device("cpu"), seed,
                       torch.Generator().manual_seed(seed))
