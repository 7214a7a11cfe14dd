"""SalUn saliency masks of a forget set -> <--save>/mask_<order>_<ratio>.pt.

    python generate_mask.py --save {MASK_PATH} --num_indexes_to_replace 3000 --unlearn_epochs 1 \
        --mem {MEM_GROUP} --group_index {ES_GROUP}

The stage is stages/mask.py; docs/stage_forget.md has the flags and what is written.
"""
from __future__ import annotations

from arg_parser import parse_args
from stages import mask
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return mask.run(parse_args(argv, prog="generate_mask.py"))


if __name__ == "__main__":
    run_main(main)
