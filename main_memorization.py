"""Memorization scores (the subsampled estimator) and memorization proxies -> <ckpts>/memorization/.

    python main_memorization.py --dataset digits --arch mlp --num_models 128 --epochs 20 --lr 0.1 --batch_size 64
    python main_memorization.py ... --shard 0 --num_shards 4     # one array task per shard
    python main_memorization.py ... --merge --num_shards 4       # then combine them
    python main_memorization.py --dataset digits --arch mlp --epochs 20 --lr 0.1 --batch_size 64 \\
        --proxies ho_ret,curvature                                # proxies of the pretrained model

The stage is stages/memorization.py; docs/stage_memorization.md describes it.
"""
from __future__ import annotations

from arg_parser import parse_args
from stages.memorization import run
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv, prog="main_memorization.py"))


if __name__ == "__main__":
    run_main(main)
