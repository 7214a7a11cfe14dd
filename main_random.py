"""SalUn (``--unlearn RL``, with a saliency mask ``--path``) and random labelling (``--unlearn RL_og``).

    python main_random.py --unlearn {RL|RL_og} --unlearn_lr {LR} --unlearn_epochs {EPOCHS} \
        --num_indexes_to_replace 3000 --mem {MEM_GROUP} --group_index {ES_GROUP} [--path {MASK_PATH}]

main_forget.py's stage (stages/forget.py) restricted to these two methods; --path is the mask file
written by generate_mask.py. docs/stage_forget.md has the details.
"""
from __future__ import annotations

from stages import forget
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return forget.main("main_random.py", argv, allowed=("RL", "RL_og"))


if __name__ == "__main__":
    run_main(main)
