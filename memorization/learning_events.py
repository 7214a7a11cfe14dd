"""Learning-event memorization proxies, recorded during training at negligible cost.

Jiang et al. 2021 (C-score proxies). For every training example (global id), running
means over all training steps of the training-mode forward pass (before the update) of
    confidence = p_y,  max_conf = max_j p_j,  entropy = sum_j p_j log p_j (the NEGATIVE entropy),
    bi_acc = 1[argmax p = y].
All four are negatively correlated with memorization.
"""
from __future__ import annotations

import numpy as np
import torch

from memorization.proxies import LEARNING_EVENT_PROXIES

PROXY_NAMES = LEARNING_EVENT_PROXIES  # the order of the columns of LearningEvents.sums


def event_stats(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B, 4] per-example (p_y, max p, sum p log p, correct) from logits [B, C]."""
    logp = torch.log_softmax(logits.detach().float(), dim=1)
    p = logp.exp()
    p_true = p.gather(1, y[:, None]).squeeze(1)
    p_max, pred = p.max(1)
    neg_entropy = (p * logp).sum(1)
    return torch.stack([p_true, p_max, neg_entropy, (pred == y).float()], dim=1)


class LearningEvents:
    """Accumulates :func:`event_stats` per global id on the training device."""

    def __init__(self, num_ids: int, device: torch.device | str = "cpu") -> None:
        self.sums = torch.zeros(num_ids, 4, dtype=torch.float64, device=device)
        self.counts = torch.zeros(num_ids, dtype=torch.float64, device=device)

    def update(self, ids: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        ids = ids.to(self.sums.device)
        self.sums.index_add_(0, ids, event_stats(logits, y).to(self.sums))
        self.counts.index_add_(0, ids, torch.ones(len(ids), dtype=torch.float64, device=self.sums.device))

    def means(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Running means for ``ids`` (NaN where an id was never seen)."""
        idx = torch.as_tensor(np.asarray(ids, np.int64), device=self.sums.device)
        s, c = self.sums[idx].cpu().numpy(), self.counts[idx].cpu().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            m = s / c[:, None]
        return {name: m[:, k] for k, name in enumerate(PROXY_NAMES)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"sums": self.sums.cpu(), "counts": self.counts.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.sums.copy_(state["sums"])
        self.counts.copy_(state["counts"])
