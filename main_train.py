"""Pretraining (SGD or SAM) -> <save_dir or ckpts/original>/<run>/.

    python main_train.py --dataset digits --arch cnn_s --epochs 30 --lr 0.1 --batch_size 64
    python main_train.py --dataset CIFAR10 --arch ResNet18 --epochs 50 --lr 0.1 --batch_size 256 \\
        --save_dir ckpts/original/ --data datasets [--sam min --rho 1.0 --lamb 1 --adaptive]

The stage is stages/train.py; docs/stage_train.md describes it.
"""
from __future__ import annotations

from arg_parser import parse_args
from stages.train import run
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv, prog="main_train.py"))


if __name__ == "__main__":
    run_main(main)
