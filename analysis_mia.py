"""ToW-MIA tables over unlearning runs.

    python analysis_mia.py --no_aug --dataset CIFAR10 --arch ResNet18 --unlearn FT \
        --mem_proxy confidence --mem high --num_indexes_to_replace 3000

ToW-MIA = (1-|MIA_u-MIA_r|)(1-|RA_u-RA_r|)(1-|TA_u-TA_r|), MIA = the confidence attack's
MIA-efficacy, against the retrain run of the same forget set and seed; mean and 95% Student-t
interval over seeds. Writes tow_mia.md/.csv/_runs.csv/.json/.tex (and tow_mia.png/.pdf) under --out.
Same flags as analysis.py; see stages/analysis.py.
"""
from __future__ import annotations

from stages.analysis import main as analysis_main
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return analysis_main("tow_mia", "analysis_mia.py", argv)


if __name__ == "__main__":
    run_main(main)
