"""Gradient-flow warnings name only layers the loss's gradient reaches and that shrink on the way back; a head the
loss does not use (yet) is "unused so far", said once."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from dlforge.training import GradientFlow
from tests.training.test_trainer import GradScale, fit


class Heads(nn.Module):
    """A trunk behind a first layer whose gradient is scaled by 1e-12 (it vanishes), and four heads: one the loss
    uses, one multiplied by zero (gradient exactly 0), one by 1e-12 (gradient ~1e-13), one never called."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.trunk = nn.Linear(4, 8), nn.Linear(8, 8)
        self.used, self.idle, self.faint, self.spare = (nn.Linear(8, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.trunk(GradScale(1e-12)(self.first(x))))
        return self.used(h) + 0 * self.idle(h) + 1e-12 * self.faint(h)


def test_unused_heads_are_not_vanishing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dlforge"):
        trainer = fit(Heads(), [GradientFlow(every=1)], epochs=2)
    last = trainer.history[-1]
    norms = last["grad_norm"]
    assert norms["idle.weight"] == 0 and 0 < norms["faint.weight"] < 1e-7 and norms["first.weight"] < 1e-7
    assert "spare.weight" not in norms  # never called: no gradient at all
    warned = " ".join(last["grad_warnings"])
    assert "first.weight: gradient norm" in warned and "vanishing" in warned  # the trunk's is large: it vanished
    for head in ("idle", "faint", "spare", "used", "trunk"):
        assert f"{head}." not in warned
    assert sorted(last["grad_unused"]) == ["faint.weight", "idle.weight", "spare.weight"]
    said = [r.getMessage() for r in caplog.records if "unused so far" in r.getMessage()]
    assert len(said) == 1 and "3 layer(s)" in said[0]  # once, though both epochs found them
