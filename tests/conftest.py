"""Shared fixtures: the repository on sys.path, generated CIFAR directories in torchvision's real
on-disk format, and a runner for the entry scripts as subprocesses."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from helpers import script_cmd, script_env, write_cifar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # plain `pytest` (CI runs `python -m pytest`, which adds the cwd)
    sys.path.insert(0, str(REPO))

# The test models are tiny: one intra-op thread is as fast, and on a busy 2-core machine several
# OpenMP threads per process spin against each other (a 10x slowdown measured). TEST_THREADS overrides.
TEST_THREADS = int(os.environ.get("TEST_THREADS", "1"))
torch.set_num_threads(TEST_THREADS)


@pytest.fixture(scope="session")
def cifar_data(tmp_path_factory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """``(data root, {"cifar10": arrays, "cifar100": arrays})``: CIFAR-10 with 20 images per batch
    file (100 train, 10 per class; 20 test) and CIFAR-100 with 1,000 train (10 per class) and 200
    test images, under ``<tmp>/datasets``. Treat as read-only."""
    root = tmp_path_factory.mktemp("data") / "datasets"
    arrays = {"cifar10": write_cifar(root, per_file=20, n_test=20, seed=0),
              "cifar100": write_cifar(root, hundred=True, per_file=1000, n_test=200, seed=1)}
    return root, arrays


@pytest.fixture
def run_script(tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """``run_script("main_train.py", *args, cwd=None, timeout=300, threads=TEST_THREADS)`` runs an
    entry script with the repository on PYTHONPATH (OMP_NUM_THREADS=threads unless None), in
    ``tmp_path`` unless ``cwd`` is given."""

    def run(script: str, *args: str, cwd: Path | None = None, timeout: float = 300,
            threads: int | None = TEST_THREADS) -> subprocess.CompletedProcess:
        return subprocess.run(script_cmd(script, *args), cwd=cwd or tmp_path, env=script_env(threads),
                              capture_output=True, text=True, timeout=timeout)

    return run
