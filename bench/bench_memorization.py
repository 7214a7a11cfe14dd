"""Batched ensemble training (trainer/ensemble.py) against one-by-one training of the same models.

Both sides train the same M models (same initializations, subsets, batch orders, recipe) on the
same data in the same process, alternating (batched, one-by-one, batched, ...) so that a shared,
busy CPU slows both alike; the best of the repeats is reported, and the ratio of the two.

    python bench/bench_memorization.py                      # mlp on digits, 32 models, 3 epochs
    python bench/bench_memorization.py --arch cnn_s --models 8 --epochs 1
    python bench/bench_memorization.py --threads 1          # torch intra-op threads (default: torch's)

One-by-one is ``trainer.fit.fit`` per model, the path the estimator would take without batching.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import build_model  # noqa: E402
from trainer.ensemble import train_ensemble  # noqa: E402
from trainer.fit import Recipe, fit  # noqa: E402
from utils.data import load_data  # noqa: E402
from memorization.estimator import model_seeds, subset_ids  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="mlp")
    p.add_argument("--models", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--ratio", type=float, default=0.7)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    data = load_data("digits")
    seeds = model_seeds(0, a.models)
    subsets = [subset_ids(data.train_ids, a.ratio, s) for s in seeds]
    recipe = Recipe(epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, augment=False)
    inits = []
    for s in seeds:
        torch.manual_seed(int(s))
        inits.append(build_model(a.arch, data.num_classes, in_channels=data.in_channels,
                                 image_size=data.image_size, mean=data.mean, std=data.std))
    cpu = torch.device("cpu")

    def batched():
        ms = [copy.deepcopy(m) for m in inits]
        train_ensemble(ms, data, subsets, seeds, recipe, device=cpu, log=None)
        return ms

    def one_by_one():
        ms = [copy.deepcopy(m) for m in inits]
        for m, sub, s in zip(ms, subsets, seeds):
            fit(m, data, sub, recipe, seed=int(s), device=cpu, log=lambda _msg: None)
        return ms

    # warm-up (first-call costs of torch.func and the allocator), not timed
    warm = Recipe(epochs=1, lr=a.lr, batch_size=a.batch_size, augment=False)
    train_ensemble([copy.deepcopy(m) for m in inits[:2]], data, [s[:a.batch_size] for s in subsets[:2]], seeds[:2],
                   warm, device=cpu, log=None)
    fit(copy.deepcopy(inits[0]), data, subsets[0][:a.batch_size], warm, seed=0, device=cpu, log=lambda _m: None)

    times = {"batched": [], "one-by-one": []}
    results = {}
    for _ in range(a.repeats):
        for name, fn in (("batched", batched), ("one-by-one", one_by_one)):
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    diff = max(float((pa.detach() - pb.detach()).abs().max()) for ma, mb in zip(results["batched"], results["one-by-one"])
               for pa, pb in zip(ma.parameters(), mb.parameters()))
    tb, to = min(times["batched"]), min(times["one-by-one"])
    steps = a.epochs * -(-len(subsets[0]) // a.batch_size)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{a.models} x {a.arch} on digits, {a.epochs} epochs x {steps // a.epochs} steps of {a.batch_size} "
          f"({len(subsets[0])} examples per model), {torch.get_num_threads()} thread(s), load avg {load:.1f}")
    print(f"one-by-one (trainer.fit.fit): {to:.2f}s  ({1e3 * to / (a.models * steps):.2f} ms per model-step)")
    print(f"batched (trainer.ensemble):   {tb:.2f}s  ({1e3 * tb / (a.models * steps):.2f} ms per model-step)")
    print(f"speed-up: {to / tb:.1f}x   (max parameter difference between the two: {diff:.2e})")


if __name__ == "__main__":
    main()
