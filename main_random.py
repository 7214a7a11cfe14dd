"""SalUn (``--unlearn RL``, with a saliency mask ``--path``) and random labelling (``--unlearn RL_og``).

    python main_random.py --unlearn {RL|RL_og} --unlearn_lr {LR} --unlearn_epochs {EPOCHS} \
        --num_indexes_to_replace 3000 --mem {MEM_GROUP} --group_index {ES_GROUP} [--path {MASK_PATH}]

The same pipeline as main_forget.py (unlearn/run.py), restricted to these two methods; other
values of --unlearn are refused (exit status 2). --path is the mask file written by
generate_mask.py.
"""
from __future__ import annotations

from unlearn.run import main as run_pipeline
from utils.cli import run_main

METHODS = ("RL", "RL_og")


def main(argv: list[str] | None = None) -> int:
    return run_pipeline("main_random.py", allowed=METHODS, argv=argv)


if __name__ == "__main__":
    run_main(main)
