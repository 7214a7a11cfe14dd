"""Forget set + one unlearning method (retrain, FT, FT_prune/FT_l1, GA, NG incl. Sharp MinMax,
SCRUB, wfisher, RL, RL_og, raw/original) with evaluation, MIA and the run directory.

    python main_forget.py --unlearn {METHOD} --dataset {DATASET} --arch {ARCHITECTURE} \
        --num_indexes_to_replace 3000 --unlearn_lr {LR} --unlearn_epochs {EPOCHS} --mem {MEM_GROUP}
    python main_forget.py --es [--es_normalized] --mask RUN --mem high --num_indexes_to_replace 3000 ...

The stage is stages/forget.py; docs/stage_forget.md has the flags and what is written.
"""
from __future__ import annotations

from stages import forget
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return forget.main("main_forget.py", argv)


if __name__ == "__main__":
    run_main(main)
