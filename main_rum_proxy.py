"""RUM with a memorization proxy (``--mem_proxy``, default confidence) instead of true scores.

    python main_rum_proxy.py --unlearn {METHOD} --mem mix --num_indexes_to_replace 3000 \
        --dataset {DATASET} --arch {ARCHITECTURE} --epochs {ORIGINAL_MODEL_EPOCHS} --lr 0.1 --batch_size 256

The stage is stages/rum.py (grouping "proxy"); docs/stage_rum.md has the flags and what is written.
"""
from __future__ import annotations

from stages import rum
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return rum.main("main_rum_proxy.py", "proxy", argv)


if __name__ == "__main__":
    run_main(main)
