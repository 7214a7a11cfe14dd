"""Forget set + unlearning (retrain, FT, FT_prune, GA, NG incl. Sharp MinMax, SCRUB, wfisher, RL,
RL_og, raw/original) with evaluation, MIA and run artifacts.

    python main_forget.py --unlearn {METHOD} --dataset {DATASET} --arch {ARCHITECTURE} \
        --num_indexes_to_replace 3000 --unlearn_lr {LR} --unlearn_epochs {EPOCHS} \
        --mem {MEM_GROUP} --group_index {ES_GROUP} [--alpha A] [--beta B] [--gamma G] [--msteps M] [--kd_T T]
    python main_forget.py --unlearn retrain --dataset D --arch A --epochs E --lr LR --batch_size B \
        --unlearn_epochs E --unlearn_lr LR --mem 0 --num_indexes_to_replace 3000 --mask ckpts/original/RUN
    python main_forget.py --es [--es_normalized] --mask RUN --mem high --num_indexes_to_replace 3000 ...

Writes <ckpts>/forget_sets/<forget set>.npz (reused when present) and the run directory
<ckpts>/unlearn/<forget set>/<model>/<method tag>/seed<seed>/ with config.json, model.pt,
outputs.npz and metrics.json. The pipeline is unlearn/run.py; see docs/stage_forget.md.
"""
from __future__ import annotations

from unlearn.run import main as run_pipeline
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return run_pipeline("main_forget.py", argv=argv)


if __name__ == "__main__":
    run_main(main)
