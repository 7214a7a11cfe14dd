"""Training throughput of ResNet-18 on 32x32x3 images: our trainer against a baseline loop in the
original code's style, measured in the same process on the same random data; and (--accuracy)
the final accuracies of fp32 and bf16 training with the same seeds.

    python bench/bench_train.py                       # 512 images x 2 repetitions, batch 256
    python bench/bench_train.py --clock cpu --threads 1 --breakdown
    python bench/bench_train.py --compile             # + torch.compile: compile time and steady state
    python bench/bench_train.py --accuracy            # fp32 vs bf16 final accuracies (digits, CIFAR-shaped)

OURS      the real trainer path: every pass is one ``trainer.fit.fit`` epoch with
          ``Recipe(epochs=1, lr=0.1, batch_size, precision=fp32|bf16)`` (SGD momentum 0.9, wd 5e-4;
          batches drawn by index from one uint8 tensor, whole-batch random crop + flip), the model
          prepared as the trainer does (trainer.device.prepare_model: channels_last); fp32 also in
          NCHW for comparison. ``--precision bf16`` is bf16 autocast of the training forward passes
          (trainer.device.autocast), on the CPU too (2.5x where the CPU has native bf16).
BASELINE  a torchvision.datasets.CIFAR10-like Dataset (numpy HWC uint8 -> PIL image per item) with
          per-image RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor, torch DataLoader
          (num_workers=0), NCHW float32, plain zero_grad/backward/step loop with per-batch
          loss.item() and accuracy, as the original trainer/train.py.

Each measurement is one pass over --images images after a warm-up batch; passes of the variants
are interleaved and the best of --reps is reported. On a shared machine wall-clock figures swing
with the other load: ``--clock cpu --threads 1`` counts the process's CPU seconds instead (images
per core-second), which other processes barely disturb. --breakdown adds the data pipelines alone
and the model step alone. --compile trains one more model with ``fit(..., compile=True)`` for
1 + --reps epochs: the first epoch's time minus a steady epoch's is the compilation. --device cuda
runs ours on the GPU (the baseline moves its batches there with .to(device)).

--accuracy trains, for each precision, cnn_s on scikit-learn's digits and a ResNet (--acc_arch) on
synthetic CIFAR-shaped data with learnable classes (bench/synthetic.py) with the same seeds, and
prints the final train/val/test accuracies of fp32 and bf16 and their differences.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import build_for, build_model  # noqa: E402
from trainer.device import prepare_model, synchronize  # noqa: E402
from trainer.evaluate import model_accuracy  # noqa: E402
from trainer.fit import Recipe, fit  # noqa: E402
from utils.batches import Augment, iterate  # noqa: E402
from utils.data import NORMALIZATION, ImageData  # noqa: E402

MEAN, STD = NORMALIZATION["cifar10"]
SGD = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)


def make_model(channels_last: bool, seed: int = 0, device: torch.device = torch.device("cpu"),
               arch: str = "resnet18") -> torch.nn.Module:
    """channels_last: as the trainer prepares it (trainer.device.prepare_model); else plain NCHW."""
    torch.manual_seed(seed)
    model = build_model(arch, 10, mean=MEAN, std=STD)
    if channels_last:
        model = prepare_model(model, device)
        assert next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight.is_contiguous(
            memory_format=torch.channels_last)
    return model.to(device).train()


def as_data(x: torch.Tensor, y: torch.Tensor) -> ImageData:
    """The random images as a CIFAR-10 :class:`ImageData` (its crop + flip augmentation), all training."""
    n = len(y)
    return ImageData("cifar10", x, y, x[:0], y[:0], 10, np.arange(n), np.zeros(0, np.int64), 1, tuple(MEAN), tuple(STD))


# --- ours ----------------------------------------------------------------------------------------

def ours_pass(model, data: ImageData, bs: int, precision: str, device, seed: int, *, compile: bool = False,
              epochs: int = 1, log=lambda s: None) -> list[dict]:
    """``epochs`` epochs of the real trainer: trainer.fit.fit with Recipe(precision=...)."""
    recipe = Recipe(epochs=epochs, batch_size=bs, precision=precision, **SGD)
    hist = fit(model, data, data.train_ids, recipe, seed=seed, device=device, log=log, compile=compile)
    synchronize(torch.device(device))
    return hist


# --- baseline in the original code's style -------------------------------------------------------

class CifarLike(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: HWC uint8 -> PIL -> transform."""

    def __init__(self, data_hwc: np.ndarray, targets: list[int], transform):
        self.data, self.targets, self.transform = data_hwc, targets, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.data[i])
        return self.transform(img), self.targets[i]


def baseline_loader(x: torch.Tensor, y: torch.Tensor, bs: int, seed: int):
    from torchvision import transforms

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor()])
    ds = CifarLike(x.permute(0, 2, 3, 1).contiguous().numpy(), y.tolist(), tf)
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=0,
                                       generator=torch.Generator().manual_seed(seed))


def baseline_pass(model, opt, loader, device=torch.device("cpu")) -> None:
    model.train()
    for image, target in loader:
        image, target = image.to(device), target.to(device)  # the original: .cuda()
        output = model(image)
        loss = F.cross_entropy(output, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _ = loss.float().item(), (output.float().argmax(1) == target).float().mean().item()


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{len(os.sched_getaffinity(0))} cores"
    except OSError:
        pass
    return platform.machine()


def machine(device: torch.device) -> str:
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {_cpu_name()}{gpu}, "
            f"python {platform.python_version()}")


# --- driver --------------------------------------------------------------------------------------

CLOCK = time.perf_counter


def timed(fn) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def build_variants(args, x, y, device) -> dict:
    """name -> one timed pass; each variant warmed up on one batch."""
    bs = args.batch_size
    data, warm = as_data(x, y), as_data(x[:bs], y[:bs])
    formats = {"auto": [True, False], "on": [True], "off": [False]}[args.channels_last]
    variants = {}
    for prec in args.precision:
        for cl in formats if prec == "fp32" else [True]:
            name = f"ours {'channels_last' if cl else 'NCHW'} {prec}"
            m = make_model(cl, device=device)
            ours_pass(m, warm, bs, prec, device, seed=1)
            variants[name] = lambda m=m, prec=prec: ours_pass(m, data, bs, prec, device, seed=1)
    bm = make_model(False, device=device)
    bo = torch.optim.SGD(bm.parameters(), **SGD)
    baseline_pass(bm, bo, baseline_loader(x[:bs], y[:bs], bs, 2), device)  # warm-up: one batch
    loader = baseline_loader(x, y, bs, 2)
    variants["baseline"] = lambda: (baseline_pass(bm, bo, loader, device), synchronize(device))
    return variants


def measure_compile(args, x, y, device, baseline_ips: float) -> list[str]:
    """fit(compile=True) for 1 + reps epochs per precision: compile time and steady-state img/s."""
    from trainer.compiled import compile_unavailable

    why = compile_unavailable(device)
    if why is not None:
        return [f"\n--compile: torch.compile unavailable here ({why}); not measured"]
    n = len(y)
    out = ["\n| ours channels_last + torch.compile | first epoch (s) | steady epoch (s) | compile (s) | "
           "steady img/s | / baseline |", "|---|---|---|---|---|---|"]
    for prec in args.precision:
        marks: list[float] = []
        lines: list[str] = []

        def log(msg: str) -> None:
            lines.append(msg)
            if msg.startswith("train epoch "):
                marks.append(CLOCK())

        m = make_model(True, device=device)
        t0 = CLOCK()
        ours_pass(m, as_data(x, y), args.batch_size, prec, device, seed=1, compile=True, epochs=1 + args.reps,
                  log=log)
        failed = [msg for msg in lines if msg.startswith("--compile")]
        times = np.diff([t0, *marks])
        steady = float(times[1:].min()) if len(times) > 1 else float("nan")
        out.append(f"| {prec} | {times[0]:.2f} | {steady:.2f} | {times[0] - steady:.2f} | {n / steady:.1f} | "
                   f"{n / steady / baseline_ips:.2f}x |" + (f" ({failed[0]})" if failed else ""))
    return out


def breakdown(args, x, y, device) -> None:
    """The data pipelines alone and the model step alone (seconds per pass)."""
    n, bs = len(y), args.batch_size
    print("\n# breakdown (seconds per pass of %d images)" % n)
    gen = torch.Generator().manual_seed(3)
    ids = np.arange(n)
    t_ours_data = timed(lambda: [b.x.sum() for b in iterate(x, y, ids, bs, shuffle=True, generator=gen,
                                                            augment=Augment(4, True))])
    t_base_data = timed(lambda: [im.sum() for im, _ in baseline_loader(x, y, bs, 4)])
    print(f"  data only: ours {t_ours_data:.3f} s, baseline (PIL per image) {t_base_data:.3f} s")
    formats = {"auto": [True, False], "on": [True], "off": [False]}[args.channels_last]
    for cl in formats:
        m = make_model(cl, device=device)
        o = torch.optim.SGD(m.parameters(), **SGD)
        xb = torch.rand(bs, 3, 32, 32, device=device)
        yb = torch.randint(0, 10, (bs,), device=device)

        def step():
            o.zero_grad()
            F.cross_entropy(m(xb), yb).backward()
            o.step()
            synchronize(device)

        step()
        t = min(timed(step) for _ in range(2))
        print(f"  model step only ({'channels_last' if cl else 'NCHW'}): {t * n / bs:.2f} s ({bs / t:.1f} img/s)")


def accuracy_mode(args, device) -> int:
    """fp32 vs bf16 final accuracies with the same seeds: cnn_s on digits, --acc_arch on synthetic
    CIFAR-shaped data."""
    from bench.synthetic import image_data
    from utils.data import load_data

    cases = [("digits", "cnn_s", load_data("digits"), args.acc_epochs, 64),
             (f"cifar-shaped synthetic, noise {args.acc_noise:g}", args.acc_arch,
              image_data(args.acc_images, max(args.acc_images // 5, 10), noise=args.acc_noise),
              args.acc_epochs, 128)]
    print(f"# final accuracies, fp32 vs bf16 training (same seeds); {machine(device)}")
    print("| data | arch | epochs | precision | train acc | val acc | test acc | seconds |\n|---|---|---|---|---|---|---|---|")
    for name, arch, data, epochs, bs in cases:
        dev_data = data.to(device)
        res = {}
        for prec in ("fp32", "bf16"):
            torch.manual_seed(args.seed)
            model = prepare_model(build_for(arch, data), device)
            t0 = time.perf_counter()
            fit(model, dev_data, data.train_ids, Recipe(epochs=epochs, batch_size=bs, lr=0.05, precision=prec),
                seed=args.seed, device=device, log=lambda s: None)
            secs = time.perf_counter() - t0
            acc = [model_accuracy(model, dev_data, "train", data.train_ids, device=device),
                   model_accuracy(model, dev_data, "train", data.val_ids, device=device),
                   model_accuracy(model, dev_data, "test", device=device)]
            res[prec] = acc
            print(f"| {name} | {arch} | {epochs} | {prec} | " + " | ".join(f"{100 * a:.2f}%" for a in acc)
                  + f" | {secs:.1f} |")
        diff = [100 * (b - a) for a, b in zip(res["fp32"], res["bf16"])]
        print(f"| {name} | {arch} | {epochs} | bf16 - fp32 | " + " | ".join(f"{d:+.2f} pt" for d in diff) + " | |")
    return 0


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=512, help="images per timed pass")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--reps", type=int, default=2, help="timed passes per variant (best reported)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (ours and the baseline)")
    p.add_argument("--precision", default="fp32,bf16",
                   help="comma list of ours' training precisions (Recipe.precision): fp32, bf16")
    p.add_argument("--channels_last", choices=("auto", "on", "off"), default="auto",
                   help="ours fp32: auto measures channels_last (the trainer's) and NCHW; on/off only one")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed seconds; cpu: this process's CPU seconds (use with --threads 1)")
    p.add_argument("--breakdown", action="store_true", help="also time the data pipelines and the model step alone")
    p.add_argument("--compile", action="store_true", help="also measure fit(compile=True): compile time, steady state")
    p.add_argument("--accuracy", action="store_true", help="instead: fp32 vs bf16 final accuracies (same seeds)")
    p.add_argument("--acc_epochs", type=int, default=10, help="--accuracy: epochs per run")
    p.add_argument("--acc_images", type=int, default=2000, help="--accuracy: synthetic CIFAR-shaped training images")
    p.add_argument("--acc_arch", default="resnet20s", help="--accuracy: architecture on the CIFAR-shaped data")
    p.add_argument("--acc_noise", type=float, default=400.0,
                   help="--accuracy: per-pixel noise of the CIFAR-shaped data (100: 100%% either way; 1000: near chance)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.precision = [v.strip().lower() for v in args.precision.split(",") if v.strip()]
    bad = [v for v in args.precision if v not in ("fp32", "bf16")]
    if bad or not args.precision:
        p.error(f"--precision: fp32 and/or bf16, got {args.precision}")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    device = torch.device(args.device)
    if args.accuracy:
        return accuracy_mode(args, device)
    g = torch.Generator().manual_seed(0)
    n, bs = args.images, args.batch_size
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    print(f"# ResNet-18, {n} images 32x32x3 per pass, batch {bs}, 10 classes, device {device}; {machine(device)}, "
          f"clock {args.clock}")
    variants = build_variants(args, x, y, device)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.reps):
        for name, fn in variants.items():
            t = timed(fn)
            times[name].append(t)
            print(f"  rep {r + 1} {name:<26} {n / t:7.1f} img/s")
    best = {k: n / min(v) for k, v in times.items()}
    print("\n| variant | images/s (best of %d) | / baseline |\n|---|---|---|" % args.reps)
    for k, v in best.items():
        print(f"| {k} | {v:.1f} | {v / best['baseline']:.2f}x |")
    for k in best:
        if k.startswith("ours channels_last"):
            print(f"{k} / baseline = {best[k] / best['baseline']:.2f}x")
    if args.compile:
        print("\n".join(measure_compile(args, x, y, device, best["baseline"])))
    if args.breakdown:
        breakdown(args, x, y, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
