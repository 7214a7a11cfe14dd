"""RUM: refine the forget set by memorization, then unlearn it group by group.

    python main_rum.py --unlearn {METHOD} --mem mix --num_indexes_to_replace 3000 \
        --dataset {DATASET} --arch {ARCHITECTURE} --epochs {ORIGINAL_MODEL_EPOCHS} --lr 0.1 --batch_size 256
    python main_rum.py --mem mix --num_indexes_to_replace 3000 ...            # the default plan
    python main_rum.py --rum_methods none,FT,RL --rum_lr 0,0.1,0.1 --rum_epochs 0,10,5 ...

The stage is stages/rum.py; docs/stage_rum.md has the flags and what is written.
"""
from __future__ import annotations

from stages import rum
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return rum.main("main_rum.py", "mem", argv)


if __name__ == "__main__":
    run_main(main)
