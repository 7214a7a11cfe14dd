"""ToW-MIA tables over unlearning runs.

    python analysis_mia.py --no_aug --dataset CIFAR10 --arch ResNet18 --unlearn FT \
        --mem_proxy confidence --mem high --num_indexes_to_replace 3000

ToW-MIA = (1-|MIA_u-MIA_r|)(1-|RA_u-RA_r|)(1-|TA_u-TA_r|), MIA = the confidence attack's
MIA-efficacy, against the retrain run of the same forget set and seed; mean and 95% Student-t
interval over seeds. Writes tow_mia.md, tow_mia.csv, tow_mia.json (and tow_mia.png) under --out.
Same flags as analysis.py; see results/report.py.
"""
from __future__ import annotations

from utils.cli import run_main
from results.report import run_analysis


def main() -> int:
    return run_analysis("tow_mia", prog="analysis_mia.py")


if __name__ == "__main__":
    run_main(main)
