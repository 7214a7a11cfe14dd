"""Training throughput of ResNet-18 on 32x32x3 images: our trainer against a baseline loop in the
original code's style, measured in the same process on the same random data.

    python bench/bench_train.py                       # 512 images x 2 repetitions, batch 256
    python bench/bench_train.py --clock cpu --threads 1 --breakdown --cpu_bf16

OURS      uint8 tensor in memory -> utils.batches.iterate (whole-batch random crop + flip) ->
          trainer.loop.train_epoch (SGD momentum 0.9, wd 5e-4); the model prepared as the trainer
          does (trainer.device.prepare_model: channels_last), and in NCHW for comparison.
BASELINE  a torchvision.datasets.CIFAR10-like Dataset (numpy HWC uint8 -> PIL image per item) with
          per-image RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor, torch DataLoader
          (num_workers=0), NCHW float32, plain zero_grad/backward/step loop with per-batch
          loss.item() and accuracy, as the original trainer/train.py.

Each measurement is one pass over --images images after a warm-up batch; passes of the variants
are interleaved and the best of --reps is reported. On a shared machine wall-clock figures swing
with the other load: ``--clock cpu --threads 1`` counts the process's CPU seconds instead (images
per core-second), which other processes barely disturb. --breakdown adds the data pipelines alone
and the model step alone; --cpu_bf16 adds a variant of ours under bf16 autocast on the CPU (which
the trainer does not use: DESIGN.md §5 autocasts on CUDA only), for comparison.
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

from models import build_model  # noqa: E402
from trainer.device import prepare_model  # noqa: E402
from trainer.loop import train_epoch  # noqa: E402
from trainer.optim import make_optimizer  # noqa: E402
from utils.batches import Augment, iterate  # noqa: E402
from utils.data import NORMALIZATION  # noqa: E402

MEAN, STD = NORMALIZATION["cifar10"]


def make_model(channels_last: bool, seed: int = 0) -> torch.nn.Module:
    """channels_last: as the trainer prepares it (trainer.device.prepare_model); else plain NCHW."""
    torch.manual_seed(seed)
    model = build_model("resnet18", 10, mean=MEAN, std=STD)
    if channels_last:
        model = prepare_model(model, torch.device("cpu"))
        assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    return model.train()


# --- ours ----------------------------------------------------------------------------------------

def ours_pass(model, opt, x, y, ids, bs, gen) -> None:
    batches = iterate(x, y, ids, bs, shuffle=True, generator=gen, augment=Augment(4, True))
    train_epoch(model, opt, batches, device="cpu")


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


def baseline_pass(model, opt, loader) -> None:
    model.train()
    for image, target in loader:
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


# --- driver --------------------------------------------------------------------------------------

CLOCK = time.perf_counter


def timed(fn) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


class _CpuBf16:
    """Makes trainer.loop's autocast(device) a bf16 autocast on the CPU while active."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self):
        import trainer.loop as loop

        saved = loop.autocast
        loop.autocast = lambda device, precision="fp32": torch.autocast("cpu", dtype=torch.bfloat16)
        try:
            return self.fn()
        finally:
            loop.autocast = saved


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=512, help="images per timed pass")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--reps", type=int, default=2, help="timed passes per variant (best reported)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--channels_last", choices=("auto", "on", "off"), default="auto",
                   help="ours: auto measures channels_last (the trainer's) and NCHW; on/off only one")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed seconds; cpu: this process's CPU seconds (use with --threads 1)")
    p.add_argument("--breakdown", action="store_true", help="also time the data pipelines and the model step alone")
    p.add_argument("--cpu_bf16", action="store_true", help="also measure ours (channels_last) under CPU bf16 autocast")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    g = torch.Generator().manual_seed(0)
    n = args.images
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    ids = np.arange(n)
    bs = args.batch_size
    lr = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)

    print(f"# ResNet-18, {n} images 32x32x3 per pass, batch {bs}, 10 classes; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {_cpu_name()}, python {platform.python_version()}, "
          f"clock {args.clock}")

    formats = {"auto": [False, True], "on": [True], "off": [False]}[args.channels_last]
    variants = {}
    for cl in formats:
        m = make_model(cl)
        o = make_optimizer(m.parameters(), "sgd", **lr)
        gen = torch.Generator().manual_seed(1)
        ours_pass(m, o, x[:bs], y[:bs], np.arange(bs), bs, gen)  # warm-up: one batch
        variants["ours channels_last" if cl else "ours NCHW"] = lambda m=m, o=o, gen=gen: ours_pass(m, o, x, y, ids, bs, gen)
    if args.cpu_bf16:
        m = make_model(True)
        o = make_optimizer(m.parameters(), "sgd", **lr)
        gen = torch.Generator().manual_seed(1)
        _CpuBf16(lambda: ours_pass(m, o, x[:bs], y[:bs], np.arange(bs), bs, gen))()
        variants["ours channels_last bf16"] = _CpuBf16(lambda: ours_pass(m, o, x, y, ids, bs, gen))
    bm = make_model(False)
    bo = torch.optim.SGD(bm.parameters(), **lr)
    baseline_pass(bm, bo, baseline_loader(x[:bs], y[:bs], bs, 2))  # warm-up: one batch
    loader = baseline_loader(x, y, bs, 2)
    variants["baseline"] = lambda: baseline_pass(bm, bo, loader)

    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.reps):
        for name, fn in variants.items():
            t = timed(fn)
            times[name].append(t)
            print(f"  rep {r + 1} {name:<20} {n / t:7.1f} img/s")
    best = {k: n / min(v) for k, v in times.items()}
    ours_name = "ours channels_last" if "ours channels_last" in best else "ours NCHW"  # the trainer's: channels_last
    print("\n| variant | images/s (best of %d) |\n|---|---|" % args.reps)
    for k, v in best.items():
        print(f"| {k} | {v:.1f} |")
    print(f"\nours ({ours_name}) / baseline = {best[ours_name] / best['baseline']:.2f}x")
    if "ours channels_last bf16" in best:
        print(f"ours channels_last bf16 (not the trainer's default) / baseline = "
              f"{best['ours channels_last bf16'] / best['baseline']:.2f}x")

    if args.breakdown:
        print("\n# breakdown (seconds per pass of %d images)" % n)
        gen = torch.Generator().manual_seed(3)
        t_ours_data = timed(lambda: [b.x.sum() for b in iterate(x, y, ids, bs, shuffle=True, generator=gen,
                                                                augment=Augment(4, True))])
        t_base_data = timed(lambda: [im.sum() for im, _ in baseline_loader(x, y, bs, 4)])
        print(f"  data only: ours {t_ours_data:.3f} s, baseline (PIL per image) {t_base_data:.3f} s")
        for cl in formats:
            m = make_model(cl)
            o = torch.optim.SGD(m.parameters(), **lr)
            xb = torch.rand(bs, 3, 32, 32)
            yb = torch.randint(0, 10, (bs,))

            def step():
                o.zero_grad()
                F.cross_entropy(m(xb), yb).backward()
                o.step()

            step()
            t = min(timed(step) for _ in range(2))
            print(f"  model step only ({'channels_last' if cl else 'NCHW'}): {t * n / bs:.2f} s "
                  f"({bs / t:.1f} img/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
