"""Stronger audits of unlearning runs: LiRA (U-LiRA), KLOM and the relearning attack.

    python analysis_audit.py --dataset digits --arch mlp --train_shadows --num_shadows 16
    python analysis_audit.py --audit lira,klom --unlearn FT --mem high --num_indexes_to_replace 3000
    python analysis_audit.py --audit relearn --relearn_steps 20 --relearn_on retain

LiRA needs shadow models of the audited runs' recipe (<ckpts>/audit/, trained once with
--train_shadows); KLOM needs several seeds of a method and of its retrain. Writes audit.md,
audit.json and audit_examples.npz under --out (default <ckpts>/analysis). See stages/audit.py
and docs/stage_audit.md.
"""
from __future__ import annotations

from stages.audit import main as audit_main
from utils.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return audit_main(argv)


if __name__ == "__main__":
    run_main(main)
