"""Where CPU bf16 training time goes: oneDNN's own per-primitive times for one ResNet-18 training
step in float32 and under bf16 autocast, in the same run.

    python bench/bench_bf16_kernels.py                 # batch 128, channels_last, torch's threads
    python bench/bench_bf16_kernels.py --threads 1 --batch_size 64

Each precision runs one warm-up step and then ``--steps`` steps in a child process with
``ONEDNN_VERBOSE=1``; the child's oneDNN log lines (``onednn_verbose,...,exec,cpu,<primitive>,
<implementation>,<prop kind>,...,<ms>``) are summed per (primitive, prop kind) over the timed
steps. Printed per precision: the kernels each primitive used (e.g. ``brg_conv_fwd:avx512_core_bf16``:
a native bf16 kernel), their milliseconds per step, the step's wall time, and the bf16 / fp32
ratios. A ratio near 1 or above for the convolutions with native bf16 kernels means the CPU's bf16
instructions are no faster than its float32 FMAs for these shapes (no AMX), not that bf16 was
emulated.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARK = "BENCH_TIMED_START"


def child(precision: str, batch_size: int, steps: int) -> None:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(REPO))
    from models import build_model
    from trainer.device import autocast

    torch.manual_seed(0)
    model = build_model("resnet18", 10, in_channels=3, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))
    cpu = torch.device("cpu")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(cpu, precision):
            out = model(x)
        F.cross_entropy(out.float(), y).backward()
        opt.step()

    step()
    print(MARK, flush=True)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    print(f"WALL {(time.perf_counter() - t0) / steps:.6f}", flush=True)


def parse_log(text: str) -> tuple[dict, float]:
    """``{(primitive, prop kind): [ms, implementations]}`` summed over the lines after the mark,
    and the wall seconds per step."""
    timed, wall = False, float("nan")
    acc: dict = defaultdict(lambda: [0.0, set()])
    for line in text.splitlines():
        if line.startswith(MARK):
            timed = True
        elif line.startswith("WALL "):
            wall = float(line.split()[1])
        elif timed and line.startswith("onednn_verbose") and ",exec,cpu," in line:
            f = line.split(",")
            i = f.index("exec")
            prim, impl, prop = f[i + 2], f[i + 3], f[i + 4]
            try:
                ms = float(f[-1])
            except ValueError:
                continue
            acc[(prim, prop)][0] += ms
            acc[(prim, prop)][1].add(impl)
    return dict(acc), wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(a.child, a.batch_size, a.steps)
        return 0
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    if a.threads:
        env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    res = {}
    for prec in ("fp32", "bf16"):
        out = subprocess.run([sys.executable, __file__, "--child", prec, "--batch_size", str(a.batch_size),
                              "--steps", str(a.steps)], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"bench_bf16_kernels: the {prec} child failed:\n{out.stderr[-2000:]}")
        res[prec] = parse_log(out.stdout)
    import torch

    print(f"ResNet-18, batch {a.batch_size}, channels_last, {a.steps} timed steps, torch {torch.__version__}, "
          f"threads {a.threads or torch.get_num_threads()}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'primitive':14s} {'prop kind':18s} {'fp32 ms/step':>12s} {'bf16 ms/step':>12s} {'bf16/fp32':>9s}  "
          f"bf16 kernels")
    keys = sorted(set(res["fp32"][0]) | set(res["bf16"][0]), key=lambda k: -res["fp32"][0].get(k, [0])[0])
    tot = {"fp32": 0.0, "bf16": 0.0}
    for k in keys:
        ms = {pr: res[pr][0].get(k, [0.0, set()])[0] / a.steps for pr in res}
        for pr in ms:
            tot[pr] += ms[pr]
        impls = ",".join(sorted(res["bf16"][0].get(k, [0, set()])[1]))
        ratio = ms["bf16"] / ms["fp32"] if ms["fp32"] else float("nan")
        print(f"{k[0]:14s} {k[1]:18s} {ms['fp32']:12.1f} {ms['bf16']:12.1f} {ratio:9.2f}  {impls[:70]}")
    print(f"{'all oneDNN':33s} {tot['fp32']:12.1f} {tot['bf16']:12.1f} {tot['bf16'] / tot['fp32']:9.2f}")
    wf, wb = res["fp32"][1], res["bf16"][1]
    print(f"{'step wall time':33s} {1000 * wf:12.1f} {1000 * wb:12.1f} {wb / wf:9.2f}  (bf16 speed-up {wf / wb:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
