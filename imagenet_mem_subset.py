"""ImageNet memorization forget sets from Feldman & Zhang's ``imagenet_index.npz``.

    python imagenet_mem_subset.py --num_indexes_to_replace 3000 --seed 2 \\
        [--mem_file imagenet_index.npz] [--train_dir datasets/imagenet/train] [--ckpts ckpts] [--save_dir .]

Writes <ckpts>/forget_sets/imagenet_mem-{low,mid,high,mix}_n{N}.npz and, for the original code,
<save_dir or .>/imagenet_filenames_indices_{N}_{seed}.npz. The stage is stages/imagenet_subset.py;
docs/stage_memorization.md describes it.
"""
from __future__ import annotations

from stages.imagenet_subset import parse_args, run
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    run_main(main)
