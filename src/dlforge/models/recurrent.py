"""Recurrent forecasters, written here: an encoder-decoder and a direct multi-horizon model.

Both map a window of the past to quantiles of the next `horizon` steps:

    past:   (B, L, P)  the lookback: scaled target in channel 0, then covariates, calendar, static
    future: (B, H, F)  what is known ahead for each forecast step (calendar, known covariates, static)
    ->      (B, H, Q)  one output per quantile, in the task's scaled units

The cell (`rnn`, `lstm`, `gru`) is an argument, so one architecture covers the three cells and the
vanishing-gradient lab's comparison carries over. The models know nothing of scaling, devices or data.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import nn

from dlforge.registry import FORECASTERS

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def recurrent(cell: str, inputs: int, hidden: int, layers: int, dropout: float) -> nn.RNNBase:
    """A stacked torch RNN/LSTM/GRU, batch first; dropout between layers (torch ignores it for one layer)."""
    return CELLS[cell](inputs, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)


def _median(quantiles: Sequence[float]) -> int:
    return min(range(len(quantiles)), key=lambda i: abs(quantiles[i] - 0.5))


@FORECASTERS.register("encoder_decoder")
class EncoderDecoder(nn.Module):
    """Sequence to sequence (Sutskever et al., 2014): the encoder reads the lookback, its final state starts
    the decoder, which emits one step at a time from the previous value and that step's known inputs.

    In training, `teacher_forcing` is the probability that a step is fed the true previous value instead
    of the model's own median (scheduled sampling, Bengio et al., 2015). At 1.0 the decoder runs in one
    call; at inference it always feeds its own median back.
    """

    def __init__(self, past_features: int, future_features: int, horizon: int, quantiles: Sequence[float],
                 cell: str = "lstm", hidden: int = 64, layers: int = 2, dropout: float = 0.1,
                 teacher_forcing: float = 0.5) -> None:
        super().__init__()
        self.horizon = horizon
        self.teacher_forcing = teacher_forcing
        self.median = _median(quantiles)
        self.encoder = recurrent(cell, past_features, hidden, layers, dropout)
        self.decoder = recurrent(cell, 1 + future_features, hidden, layers, dropout)
        self.head = nn.Linear(hidden, len(quantiles))

    def forward(self, past: torch.Tensor, future: torch.Tensor, targets: torch.Tensor | None = None
                ) -> torch.Tensor:
        _, state = self.encoder(past)  # h (and c): (layers, B, hidden)
        previous = past[:, -1:, :1]  # (B, 1, 1): the last observed target
        forcing = self.teacher_forcing if self.training and targets is not None else 0.0
        if forcing >= 1.0:  # every step fed the truth: one call over the whole horizon
            shifted = torch.cat([previous, targets[:, :-1, None]], dim=1)  # (B, H, 1)
            out, _ = self.decoder(torch.cat([shifted, future], dim=2), state)
            return self.head(out)  # (B, H, Q)
        outputs = []
        for h in range(self.horizon):
            out, state = self.decoder(torch.cat([previous, future[:, h:h + 1]], dim=2), state)  # (B, 1, hidden)
            step = self.head(out)  # (B, 1, Q)
            outputs.append(step)
            use_truth = forcing > 0 and random.random() < forcing
            previous = targets[:, h:h + 1, None] if use_truth else step[..., self.median:self.median + 1].detach()
        return torch.cat(outputs, dim=1)  # (B, H, Q)


@FORECASTERS.register("direct")
class Direct(nn.Module):
    """Direct multi-horizon (the MQ-RNN idea, Wen et al., 2017): an encoder summarises the lookback in its
    final hidden state, and an MLP maps it, with every future step's known inputs, to all H x Q outputs at
    once. No step feeds the next, so errors do not compound over the horizon."""

    def __init__(self, past_features: int, future_features: int, horizon: int, quantiles: Sequence[float],
                 cell: str = "lstm", hidden: int = 64, layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.horizon, self.q = horizon, len(quantiles)
        self.encoder = recurrent(cell, past_features, hidden, layers, dropout)
        self.head = nn.Sequential(
            nn.Linear(hidden + horizon * future_features, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, horizon * self.q))

    def forward(self, past: torch.Tensor, future: torch.Tensor, targets: torch.Tensor | None = None
                ) -> torch.Tensor:
        out, _ = self.encoder(past)  # (B, L, hidden)
        summary = torch.cat([out[:, -1], future.flatten(1)], dim=1)  # (B, hidden + H * F)
        return self.head(summary).view(-1, self.horizon, self.q)  # (B, H, Q)
