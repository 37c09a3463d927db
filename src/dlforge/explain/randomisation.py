"""The model-randomisation check (Adebayo et al., 2018): the attributions of the trained model and of a copy with its
weights shuffled should differ; a high rank correlation means the method shows the input, not what the model learned.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from dlforge.explain.core import explain, explain_item
from dlforge.predictor import Predictor


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` re-initialised as Adebayo et al. do: each layer by its own initialiser (`reset_parameters`);
    weights no initialiser covers are shuffled within their tensor (the same scale, nothing learned)."""
    shuffled = copy.deepcopy(model)
    reset: set[int] = set()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for m in shuffled.modules():
            if m is not shuffled and callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
                reset.update(id(p) for p in m.parameters())
        for p in shuffled.parameters():
            if id(p) not in reset:
                p.copy_(p.flatten()[torch.randperm(p.numel()).to(p.device)].view_as(p))
    return shuffled


def randomisation(predictor: Predictor, items: Sequence[Any], method: str | None = None, target: str | None = None,
                  box: int | None = None, options: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """Spearman rank correlation of |attributions| (and of signed ones) between the trained model and its randomised
    copy, per item, for the same target (the trained model's choice), over the units where the input differs from
    the baseline."""
    from scipy.stats import spearmanr

    trained = explain(predictor, items, method, target, box, options, checks=False)
    shuffled = predictor.with_model(randomised(predictor.model, seed))
    rhos: dict[str, list[float | None]] = {"abs": [], "signed": []}
    for item, e in zip(items, trained, strict=True):
        r = explain_item(shuffled, item, e.method, e.resolved, e.options, checks=False)
        moved = np.concatenate([np.ravel(p.moved()) for p in e.parts])  # units equal to the baseline are left out
        a, b = (np.concatenate([np.ravel(u) for u in x.units])[moved] for x in (e, r))
        for key, (x, y) in (("abs", (np.abs(a), np.abs(b))), ("signed", (a, b))):
            rho = spearmanr(x, y).statistic if np.ptp(x) and np.ptp(y) else np.nan  # constant: undefined
            rhos[key].append(None if np.isnan(rho) else float(rho))
    mean = {key: float(np.mean(known)) if (known := [r for r in v if r is not None]) else None
            for key, v in rhos.items()}
    return {"method": trained[0].method if trained else method, "spearman_abs": rhos["abs"],
            "spearman_signed": rhos["signed"], "mean_abs": mean["abs"], "mean_signed": mean["signed"]}
