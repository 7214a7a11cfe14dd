"""``--release``: the sharp-unlearn release's behaviour for every deviation that changes training
dynamics (DESIGN.md §7.8; the README's table of deviations; upstream-spec §11.1).

Each switch lives where its behaviour lives and reads ``cfg.release`` (or ``args.release``):

============================  ===============================  ========================================
deviation                     our default                      ``--release`` (upstream-spec)
============================  ===============================  ========================================
unlearning optimizer          ``--unlearn_optimizer`` (sgd)    AdamW(lr=--unlearn_lr, wd=--weight_decay,
                                                               betas (0.9, 0.999), eps 1e-8) (§5.7-3);
                                                               here: :func:`release_config`,
                                                               trainer/optim.py
saliency mask semantics       hard: masked weights never       the mask multiplies the gradient (plain)
                              move; SAM: M * g_final           or only g1 (SAM: g0 + s lamb (M g1 - g0));
                                                               weight decay and Adam state still move
                                                               masked weights (§5.9, §5.10, §11.1-8/9);
                                                               here: cfg.mask becomes a
                                                               trainer.mask.ReleaseMask
Sharp MinMax sub-steps        hard split (each moves only      the same soft mask per sub-step: the max
                              its own part)                    step gives non-salient weights 2 g0,
                                                               both AdamWs decay all weights (§5.9);
                                                               unlearn/neggrad_plus.py
NG's forget batches           reshuffled on every pass         first pass cached and replayed
                                                               (itertools.cycle, §11.1-12);
                                                               unlearn/neggrad_plus.py
NG (no --separate) under SAM  mask is a hard constraint        mask not applied (§5.9 "NG")
saliency mask order           --mask_order (largest)           smallest (§6.1-5); stages/mask.py
saliency gradient inputs      not augmented, in order          augmented per --no_aug, shuffled (§6.1-4);
                                                               unlearn/saliency.py, stages/mask.py
============================  ===============================  ========================================
"""
from __future__ import annotations

from dataclasses import replace

from trainer.mask import ReleaseMask
from unlearn.base import UnlearnConfig


def release_config(cfg: UnlearnConfig) -> UnlearnConfig:
    """``cfg`` with the release's settings: AdamW unlearning (upstream-spec §5.7-3: ``AdamW(θ,
    lr=--unlearn_lr, weight_decay=--weight_decay)``, torch's other defaults; DESIGN.md §7.4) and a
    saliency mask with the release's semantics (:class:`trainer.mask.ReleaseMask`). Retrain keeps
    its recipe (``cfg.recipe``; see the README's table)."""
    mask = None if cfg.mask is None else ReleaseMask(cfg.mask)
    return replace(cfg, optimizer="adamw", mask=mask, release=True)
