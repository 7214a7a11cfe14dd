"""Throughput of the training augmentation on batches of 32x32x3 uint8 images (DESIGN.md §3).

    python bench/bench_randaugment.py                         # CPU, 20 batches of 256
    python bench/bench_randaugment.py --device cuda --batches 200
    python bench/bench_randaugment.py --threads 1             # a loaded CPU: avoid oversubscription

Three pipelines, each from a uint8 batch on --device to float in [0, 1] (what utils.batches.iterate
does per batch), measured in the same run and interleaved, best of --reps:

CROP+FLIP      ``Augment(4, True)``: CIFAR-10's whole-batch random crop (padding 4) + flip, the
               baseline the others are divided by;
CROP+FLIP+RA   ``Augment(4, True, randaugment=(2, 15))``: CIFAR-100's, RandAugment grouped by op
               (utils.randaugment);
PER-IMAGE RA   the same batch crop + flip, then torchvision.transforms.v2.RandAugment(2, 15) called
               on every image in a Python loop (the per-image way, on the same device).

Printed: images per second of each and the ratio to CROP+FLIP. Figures depend on the machine and
its load; do not read much into a run on a shared CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.batches import Augment  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _per_image_loop(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    from torchvision.transforms import v2

    ra = v2.RandAugment(num_ops=2, magnitude=15)
    x = Augment(4, True)(x, gen)
    return torch.stack([ra(img) for img in x])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=int, default=20, help="batches per measurement")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--loop_batches", type=int, default=None,
                   help="batches for the per-image loop (default: --batches, at most 5)")
    a = p.parse_args(argv)
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (a.batch_size, 3, 32, 32), generator=g, dtype=torch.uint8).to(device)
    crop_flip, full = Augment(4, True), Augment(4, True, randaugment=(2, 15))
    loop_batches = a.loop_batches if a.loop_batches is not None else min(a.batches, 5)
    variants = {
        "crop+flip": (lambda gen: crop_flip(x, gen), a.batches),
        "crop+flip+RandAugment (grouped)": (lambda gen: full(x, gen), a.batches),
        "crop+flip + per-image v2.RandAugment loop": (lambda gen: _per_image_loop(x, gen), loop_batches),
    }
    for fn, _ in variants.values():  # warm-up (caches, kernels)
        fn(torch.Generator().manual_seed(1)).float().div_(255)
    _sync(device)
    best = {name: float("inf") for name in variants}
    for rep in range(a.reps):
        for name, (fn, n) in variants.items():
            gen = torch.Generator().manual_seed(rep)
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                fn(gen).float().div_(255)
            _sync(device)
            best[name] = min(best[name], (time.perf_counter() - t0) / max(n, 1))
    base = a.batch_size / best["crop+flip"]
    print(f"# augmentation of {a.batch_size} x 3 x 32 x 32 uint8 images on {device} (best of {a.reps})")
    print("| pipeline | images/s | / crop+flip |")
    print("|---|---|---|")
    for name, t in best.items():
        ips = a.batch_size / t
        print(f"| {name} | {ips:.0f} | {ips / base:.3f} |")
    grouped = best["crop+flip + per-image v2.RandAugment loop"] / best["crop+flip+RandAugment (grouped)"]
    print(f"\ngrouped RandAugment / per-image loop: {grouped:.1f}x faster")


if __name__ == "__main__":
    main()
