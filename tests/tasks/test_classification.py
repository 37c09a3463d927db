"""How a classifier states its probabilities: enough digits that a saturated prediction keeps its small ones."""

from __future__ import annotations

import pytest
import torch

import dlforge
from dlforge.registry import TASKS
from tests.conftest import digits_spec


def test_a_saturated_prediction_keeps_its_small_probabilities() -> None:
    spec = dlforge.validate_spec(digits_spec())
    task = TASKS.get(spec.task)(spec)
    logits = torch.tensor([[20.0, 0.0, 9.0]])
    exact = logits.softmax(-1)[0].tolist()  # 0.99998331, 2.0611193e-09, 1.6701422e-05
    [prediction] = task.postprocess(logits, {"classes": ["a", "b", "c"]})
    p = prediction["probabilities"]
    assert p["b"] > 0  # six decimals said 0.0
    assert [p["a"], p["b"], p["c"]] == pytest.approx(exact, rel=1e-6)
    assert prediction["label"] == "a" and prediction["confidence"] == p["a"] < 1
