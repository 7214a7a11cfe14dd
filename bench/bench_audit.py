"""Cost of ``analysis_audit.py`` on digits, against one retrain of the same recipe (the unit a
shadow model costs), all measured in this run.

    python bench/bench_audit.py                                   # mlp, 3 seeds, 128 shadows
    python bench/bench_audit.py --arch cnn_s --epochs 15          # the quickstart's recipe
    python bench/bench_audit.py --num_shadows 8 --seeds 2 --epochs 3   # smoke run

A temporary ``--ckpts`` tree is built first (not timed): a synthetic memorization score file
(uniform, seeded), then per seed ``main_train.py`` and, on the high-memorization forget set of
``--n`` examples, ``main_forget.py`` retrain, FT and GA. Timed, each as a subprocess (start-up,
loading and writing included, as a user runs it):

RETRAIN   one ``main_forget.py --unlearn retrain`` in a tree of its own: the baseline unit;
AUDIT     ``analysis_audit.py --train_shadows --num_shadows K`` (LiRA, KLOM, relearning): the
          whole audit from nothing, K shadows of the recipe included;
REUSE     the same call again: the stored shadows are reused (the audit proper).

Printed: seconds of each and the ratios AUDIT / RETRAIN and REUSE / RETRAIN, and the shadow rate.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from utils.data import load_data  # noqa: E402


def _run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"bench_audit: {' '.join(cmd[:2])} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return dt, p.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="mlp")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--num_shadows", type=int, default=128)
    ap.add_argument("--n", type=int, default=90, help="forget-set size")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--keep", default=None, help="build the tree here and keep it")
    a = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if a.threads:
        env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    with tempfile.TemporaryDirectory(prefix="bench_audit_") as tmp:
        work = Path(a.keep) if a.keep else Path(tmp)
        n_images = len(load_data("digits").x)  # the score file covers the training split incl. validation

        def tree(name: str) -> list[str]:
            """A ``--ckpts`` tree with the synthetic score file; the shared flags pointing at it."""
            (work / name / "memorization").mkdir(parents=True, exist_ok=True)
            np.savez(work / name / "memorization" / "digits_memorization.npz",
                     memorization=np.random.default_rng(0).random(n_images))
            return ["--dataset", "digits", "--arch", a.arch, "--epochs", str(a.epochs), "--lr", "0.1",
                    "--batch_size", "64", "--ckpts", name]

        base = tree("ckpts")
        forget = ["--mem", "high", "--num_indexes_to_replace", str(a.n)]
        retrain = ["--unlearn", "retrain", "--unlearn_epochs", str(a.epochs), "--unlearn_lr", "0.1"]
        t0 = time.perf_counter()
        for s in range(1, a.seeds + 1):
            b = [*base, "--seed", str(s)]
            _run([str(REPO / "main_train.py"), *b], work, env)
            for extra in (retrain, ["--unlearn", "FT", "--unlearn_epochs", "3", "--unlearn_lr", "0.01"],
                          ["--unlearn", "GA", "--unlearn_epochs", "3", "--unlearn_lr", "0.001"]):
                _run([str(REPO / "main_forget.py"), *b, *forget, *extra], work, env)
        build = time.perf_counter() - t0
        # the baseline unit: a retrain in a tree of its own (its pretraining not timed)
        unit = [*tree("unit"), "--seed", "1"]
        _run([str(REPO / "main_train.py"), *unit], work, env)
        t_retrain, _ = _run([str(REPO / "main_forget.py"), *unit, *forget, *retrain], work, env)
        audit = [str(REPO / "analysis_audit.py"), "--ckpts", "ckpts", "--dataset", "digits",
                 "--num_shadows", str(a.num_shadows)]
        t_audit, _ = _run([*audit, "--train_shadows"], work, env)
        t_reuse, _ = _run(audit, work, env)
        js = json.loads((work / "ckpts" / "analysis" / "audit.json").read_text())
    rows = [("retrain (one run, the unit)", t_retrain), (f"whole audit, {a.num_shadows} new shadows", t_audit),
            ("audit with the stored shadows", t_reuse)]
    print(f"digits {a.arch} ep{a.epochs}, {a.seeds} seeds x (retrain, FT, GA) on mem-high n{a.n}; "
          f"tree built in {build:.0f}s (not timed below)")
    print(f"{'step':40s} {'seconds':>9s} {'/ retrain':>10s}")
    for name, t in rows:
        print(f"{name:40s} {t:9.1f} {t / t_retrain:9.2f}x")
    shadow_s = t_audit - t_reuse
    print(f"shadow training ~{shadow_s:.0f}s: {shadow_s / a.num_shadows:.2f}s per shadow "
          f"({shadow_s / a.num_shadows / t_retrain:.2f}x a retrain process)")
    print(f"audit phases of the reuse call: {js['settings']['seconds']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
