"""Unlearning time of every method as a fraction of retraining's, measured in one run.

Each method runs through the registry (``unlearn.get_method``) exactly as main_forget.py runs it,
on synthetic data of the chosen shape, from the same start model. The measured quantity is seconds
per epoch (per pass for wfisher); the fraction extrapolates linearly to each method's usual epoch
count (RUM's README settings) against retraining for ``--retrain_epochs`` epochs:

    fraction = t_method_per_epoch * epochs_method / (t_retrain_per_epoch * retrain_epochs)

    python bench/bench_methods.py                                  # ResNet-18, 32x32x3, 256 images
    python bench/bench_methods.py --arch cnn_s --size 8 --channels 1 --images 1297 --batch 64
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import build_model  # noqa: E402
from trainer.fit import Recipe  # noqa: E402
from unlearn import get_method  # noqa: E402
from unlearn.base import UnlearnConfig, UnlearnTask  # noqa: E402
from utils.data import ImageData  # noqa: E402

# method -> (epochs in RUM's README settings, extra config); wfisher is one pass.
METHODS = {
    "FT": (10, {}),
    "FT_prune": (10, {"alpha": 1e-4}),
    "GA": (5, {}),
    "NG": (5, {}),
    "SCRUB": (5, {"msteps": 4, "kd_T": 4.0, "beta": 0.001, "gamma": 0.99}),
    "RL_og": (10, {}),
    "RL": (10, {}),
    "wfisher": (1, {"alpha": 1.0}),
}


def synthetic(n: int, size: int, channels: int, classes: int, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    ids = np.arange(n, dtype=np.int64)
    return ImageData("cifar10" if channels == 3 else "digits", x, y, x[: n // 4], y[: n // 4], classes, ids,
                     np.zeros(0, np.int64), 1, (0.5,) * channels, (0.25,) * channels)


def timed(name: str, model, data, forget, retain, cfg: UnlearnConfig) -> float:
    task = UnlearnTask(model=copy.deepcopy(model), data=data, forget_ids=forget, retain_ids=retain,
                       device=torch.device("cpu"), seed=0, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    get_method(name)(task, cfg)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--forget", type=float, default=0.1, help="forget fraction")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--retrain_epochs", type=int, default=30, help="RUM retrains CIFAR for 30 epochs")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    data = synthetic(a.images, a.size, a.channels, 10)
    forget = np.arange(int(a.images * a.forget), dtype=np.int64)
    retain = np.arange(len(forget), a.images, dtype=np.int64)
    torch.manual_seed(0)
    model = build_model(a.arch, 10, in_channels=a.channels, image_size=a.size, mean=data.mean, std=data.std)
    mask = {n: torch.rand(p.shape) < 0.5 for n, p in model.named_parameters()}
    base = dict(lr=0.01, epochs=1, batch_size=a.batch, augment=True)
    print(f"{a.arch}, {a.images} images of {a.channels}x{a.size}x{a.size} ({len(forget)} forget), batch {a.batch}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    retrain_cfg = UnlearnConfig(**base, recipe=Recipe(epochs=1, lr=0.1, batch_size=a.batch))
    timed("retrain", model, data, forget, retain, retrain_cfg)  # warm-up
    t_retrain = timed("retrain", model, data, forget, retain, retrain_cfg)
    print(f"{'retrain':10s} {t_retrain:7.2f} s/epoch  x {a.retrain_epochs} epochs = reference")
    for name, (epochs, extra) in METHODS.items():
        cfg = UnlearnConfig(**base, mask=mask if name == "RL" else None, **extra)
        t = timed(name, model, data, forget, retain, cfg)
        frac = t * epochs / (t_retrain * a.retrain_epochs)
        print(f"{name:10s} {t:7.2f} s/{'pass ' if name == 'wfisher' else 'epoch'} x {epochs:2d} = "
              f"{100 * frac:6.2f}% of retrain")


if __name__ == "__main__":
    main()
