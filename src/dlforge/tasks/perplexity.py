"""Perplexity from per-sequence sums, a torchmetrics Metric. Its own module so that importing the task (and so
the CLI) does not import torchmetrics, which costs seconds."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class TokenPerplexity(Metric):
    """exp(total negative log-likelihood / total tokens), from per-sequence sums: exact across batches."""

    higher_is_better = False
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("nll", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, nll: torch.Tensor, tokens: torch.Tensor) -> None:  # (B,), (B,)
        self.nll += nll.double().sum()
        self.tokens += tokens.double().sum()

    def compute(self) -> torch.Tensor:
        return torch.exp(self.nll / self.tokens.clamp_min(1))
