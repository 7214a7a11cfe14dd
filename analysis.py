"""ToW tables over unlearning runs, and the entanglement score of a forget set (--es).

    python analysis.py                                   # every run under ckpts/unlearn
    python analysis.py --no_aug --dataset CIFAR10 --arch ResNet18 --unlearn FT \
        --mem_proxy confidence --mem high --num_indexes_to_replace 3000
    python analysis.py --runs ckpts/unlearn --out ckpts/analysis --dataset digits
    python analysis.py --es --dataset digits --arch cnn_s --forget_set ckpts/forget_sets/X.npz [--mask RUN]

ToW of each run against the retrain of the same forget set, seed and start-model recipe; mean and 95%
Student-t interval over seeds per row (method, hyperparameters, start model) and forget set. Writes
tow.md/.csv/_runs.csv/.json/.tex (with matplotlib tow.png/.pdf, forget_by_mem.png/.pdf) under --out;
--select random picks each method's hyperparameters on random forget sets. See stages/analysis.py.
"""
from __future__ import annotations

from stages.analysis import main as analysis_main
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return analysis_main("tow", "analysis.py", argv)


if __name__ == "__main__":
    run_main(main)
