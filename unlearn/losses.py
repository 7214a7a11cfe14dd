"""Loss formulas shared by unlearning methods (pure functions of tensors or of a model's parameters).

- :func:`distill_kl`: the temperature-scaled distillation KL of SCRUB (Hinton et al. 2015's
  ``DistillKL`` as used by Kurmanji et al. 2023; upstream-spec §5.9).
- :func:`l1_norm` and :func:`l1_coefficient`: the L1 penalty of "L1-sparse" unlearning and its
  linearly decaying weight (Jia et al. 2023; upstream-spec §5.9, rum-spec §1.5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """``KL_T(s, t) = T^2 / B * sum_batch sum_classes p_t (log p_t - log softmax(s / T))`` with
    ``p_t = softmax(t / T)``: the KL divergence of the student's tempered distribution from the
    teacher's, summed over classes, averaged over the batch and scaled by ``T^2`` (so its gradient
    magnitude does not shrink with the temperature). Equals
    ``T**2 * F.kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean")``. Computed in float32."""
    s = student_logits.float()
    t = teacher_logits.float()
    log_ps = F.log_softmax(s / T, dim=1)
    log_pt = F.log_softmax(t / T, dim=1)
    # kl_div with log_target handles p_t = 0 exactly (0 * log 0 = 0) without taking log of zero.
    return F.kl_div(log_ps, log_pt, reduction="sum", log_target=True) * (T * T) / s.shape[0]


def l1_norm(model: nn.Module) -> torch.Tensor:
    """``||theta||_1`` over ``model.parameters()``: every parameter, weights, biases and BatchNorm
    affine terms alike, as the original (upstream-spec §5.9). Buffers are not included."""
    params = [p for p in model.parameters()]
    if not params:
        return torch.zeros(())
    return torch.stack([p.abs().sum(dtype=torch.float32) for p in params]).sum()


def l1_coefficient(epoch: int, epochs: int, no_l1_epochs: int, alpha: float) -> float:
    """Weight of the L1 term at (0-based) ``epoch``: ``alpha * (1 - epoch / (epochs - no_l1_epochs))``
    for ``epoch < epochs - no_l1_epochs``, else 0 (the last ``no_l1_epochs`` epochs are plain
    fine-tuning). Linear decay from ``alpha`` at epoch 0; it never reaches 0 inside the L1 window
    (upstream-spec §5.9)."""
    window = epochs - no_l1_epochs
    if window <= 0 or epoch >= window:
        return 0.0
    return alpha * (1.0 - epoch / window)
