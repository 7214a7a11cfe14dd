"""Two processes with gloo on the CPU train exactly like one process on the same global batch."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _train(cwd: Path, save: str, extra: list[str], nproc: int) -> dict:
    args = [str(REPO / "main_train.py"), "--dataset", "digits", "--arch", "mlp", "--epochs", "2",
            "--batch_size", "50", "--save_dir", save, *extra]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               *args]
    else:
        cmd = [sys.executable, *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = list((cwd / save).iterdir())
    return torch.load(run / "model.pt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("extra", [[], ["--sam", "min", "--rho", "0.5", "--adaptive"]], ids=["sgd", "sam"])
def test_two_process_ddp_matches_single_process(tmp_path, extra):
    if shutil.which("torchrun") is None and not torch.distributed.is_available():
        pytest.skip("torch.distributed unavailable")
    single = _train(tmp_path, "single", extra, 1)
    ddp = _train(tmp_path, "ddp", extra, 2)
    assert single.keys() == ddp.keys()
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-5, atol=1e-5, msg=k)


def _retrain(cwd: Path, ckpts: str, nproc: int) -> dict:
    args = [str(REPO / "main_forget.py"), "--unlearn", "retrain", "--dataset", "digits", "--arch", "mlp",
            "--epochs", "2", "--batch_size", "50", "--unlearn_epochs", "2", "--unlearn_lr", "0.1",
            "--num_indexes_to_replace", "30", "--ckpts", ckpts]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
           if nproc > 1 else [sys.executable, *args])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (model,) = list((cwd / ckpts / "unlearn").rglob("model.pt"))
    assert (model.parent / "metrics.json").is_file()
    return torch.load(model, weights_only=True)["state_dict"]


def test_two_process_retrain_matches_single_process(tmp_path):
    single = _retrain(tmp_path, "single", 1)
    ddp = _retrain(tmp_path, "ddp", 2)
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-5, atol=1e-5, msg=k)
