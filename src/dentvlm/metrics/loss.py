"""The evaluation loss as a token-weighted mean: sum of per-token losses over every batch and rank,
divided by their token count (the training loss's weighting)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class TokenMeanLoss(Metric):
    """Σ loss / Σ tokens. Unlike torchmetrics' MeanMetric it never inspects values on the host
    (MeanMetric's NaN check copies to the host every step, and with the check disabled it drops the
    weights), so updating costs no device synchronisation."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("loss", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, loss_sum: torch.Tensor, tokens: torch.Tensor) -> None:
        self.loss += loss_sum.detach().to(torch.float64)
        self.tokens += tokens.to(torch.float64)

    def compute(self) -> torch.Tensor:
        return (self.loss / self.tokens.clamp(min=1)).float()
