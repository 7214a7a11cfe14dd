"""A two-tensor float64 model with a closed-form loss, for hand-computed SAM tests."""
import numpy as np
import torch
from torch import nn

A = np.array([1.5, 0.5])
C = np.array([0.2, -0.1, 0.3])
W0 = np.array([0.7, -1.2])
V0 = np.array([0.9, -0.4, 1.1])


class Quartic(nn.Module):
    """f(w, v) = 0.5 sum(A w^2) + 0.25 sum(v^4) + w0 v1 + C.v   (not quadratic, so g1 != affine(g0))."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(W0, dtype=torch.float64))
        self.v = nn.Parameter(torch.tensor(V0, dtype=torch.float64))

    def loss(self):
        a, c = torch.tensor(A), torch.tensor(C)
        return 0.5 * (a * self.w ** 2).sum() + 0.25 * (self.v ** 4).sum() + self.w[0] * self.v[1] + (c * self.v).sum()
