"""RL: SalUn = random labelling (unlearn/random_label.py) restricted to a saliency mask.

The update is exactly RL_og's (upstream-spec §5.9): every epoch fresh uniform labels over all C
classes for the forget examples, cross-entropy over relabelled forget ∪ retain. The mask
(``cfg.mask``, from ``--path``; written by ``generate_mask.py``) is required and is a hard
constraint (DESIGN.md §7.6): only its ``True`` entries move. Which entries those are -- the
largest or the smallest saliency -- was decided when the mask was made (``--mask_order``,
DESIGN.md §7.1).
"""
from __future__ import annotations

from unlearn.base import UnlearnConfig, UnlearnTask
from unlearn.random_label import train_random_labels


def unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> None:
    if cfg.mask is None:
        raise ValueError("RL (SalUn) needs a saliency mask: pass --path MASK_FILE "
                         "(written by generate_mask.py); RL_og is random labelling without a mask")
    train_random_labels(task, cfg, cfg.mask)
