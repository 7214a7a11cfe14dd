"""L1-sparse unlearning (``FT_l1``, ``FT_prune``): fine-tune on the retain set with a decaying L1
penalty on the weights. Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023;
update rule as in upstream-spec §5.9 and rum-spec §1.5.

Update rule, for epoch e = 0 .. epochs-1, one pass over shuffled retain batches B_r::

    alpha_e = alpha * (1 - e / (epochs - no_l1_epochs))   if e < epochs - no_l1_epochs, else 0
    L(theta) = CE(f_theta(x), y) + alpha_e * ||theta||_1          (x, y) in B_r
    theta <- optimizer step on L   (SGD or AdamW per --unlearn_optimizer; SAM with --sam)

``||theta||_1`` runs over every parameter (weights, biases, BatchNorm affine), as the original's
``model.parameters()``. Flags: ``--alpha`` (alpha, default 0.99 as the original's parser: far too
large for ~10^7 weights, RUM swept small values), ``--no_l1_epochs`` (default 0),
``--unlearn_lr``, ``--unlearn_epochs``; the learning rate follows ``--decreasing_lr`` (MultiStepLR).

Decisions (and where they differ from the original code):

- SAM: the same objective (CE + alpha_e L1) is evaluated in the clean and the perturbed pass. The
  original used CE only on the clean pass and CE + L1 only on the perturbed pass, so with
  ``--sam max`` (g = (1 + lamb) g0 - lamb g1) its L1 gradient entered with weight -lamb: the
  regularizer was flipped into an anti-sparsity term. Here the L1 gradient enters as
  ``(1 + lamb) a sign(w) - lamb a sign(w + e)``, i.e. ``a sign(w)`` wherever the perturbation does
  not cross zero: the L1 stays a regularizer of the objective and is never flipped.
- Saliency mask (``--path``): a hard constraint on every step (trainer.step, DESIGN.md §7.6), not
  only on the perturbed gradient as the original.
- After the last epoch the fraction of exactly-zero convolution weights is printed, like the
  original's ``FT_prune``; nothing is pruned (neither does the original's ``FT_prune``). ``FT_l1``
  and ``FT_prune`` are the same method here; the original's extra test-set validation of
  ``FT_prune`` is the ordinary evaluation every run gets.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from unlearn.base import UnlearnConfig, UnlearnTask, run_epochs
from unlearn.losses import l1_coefficient, l1_norm


def conv_sparsity(model: nn.Module) -> float | None:
    """Fraction of exactly-zero entries over the weights of all ``nn.Conv2d`` modules (None when
    the model has no convolution)."""
    zeros = total = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            zeros += int((m.weight == 0).sum())
            total += m.weight.numel()
    return zeros / total if total else None


def unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> None:
    """CE + decaying L1 fine-tuning on the retain set (see the module docstring)."""
    model = task.model

    def coefficient(epoch: int) -> float:
        return l1_coefficient(epoch, cfg.epochs, cfg.no_l1_epochs, cfg.alpha)

    def loss_for(epoch: int):
        a = coefficient(epoch)

        def loss_fn(logits, y):
            ce = F.cross_entropy(logits, y)
            return ce + a * l1_norm(model) if a != 0 else ce
        return loss_fn

    run_epochs(task, cfg, "l1", lambda epoch: (task.retain_ids, None), loss_fn=loss_for, trainable=cfg.mask,
               report=lambda e, st: f"[FT_l1] epoch {e}: alpha_e {coefficient(e):.4g}  loss {st['loss']:.4f}  "
                                    f"retain acc {100 * st['acc']:.2f}%")
    s = conv_sparsity(model)
    if s is None:
        print("[FT_l1] conv-weight sparsity: n/a (the model has no convolution)")
    else:
        print(f"[FT_l1] conv-weight sparsity: {100 * s:.2f}% zeros (remaining {100 * (1 - s):.2f}%); nothing pruned")
