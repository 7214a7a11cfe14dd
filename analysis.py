"""ToW tables over unlearning runs, and the entanglement score of a forget set (--es).

    python analysis.py                                   # every run under ckpts/unlearn
    python analysis.py --no_aug --dataset CIFAR10 --arch ResNet18 --unlearn FT \
        --mem_proxy confidence --mem high --num_indexes_to_replace 3000
    python analysis.py --runs ckpts/unlearn --out ckpts/analysis --dataset digits
    python analysis.py --es --dataset digits --arch cnn_s --forget_set ckpts/forget_sets/X.npz [--mask RUN]

ToW = (1-|FA_u-FA_r|)(1-|RA_u-RA_r|)(1-|TA_u-TA_r|) of each run against the retrain run of the same
forget set and seed; mean and 95% Student-t interval over seeds per method tag and forget set.
Writes tow.md, tow.csv, tow.json (and tow.png with matplotlib) under --out (default ckpts/analysis).
--dataset/--arch filter only when given; --no_aug is accepted and has no effect. See stages/analysis.py.
"""
from __future__ import annotations

from stages.analysis import main as analysis_main
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return analysis_main("tow", "analysis.py", argv)


if __name__ == "__main__":
    run_main(main)
