"""Trust checks of explanations (ours, short).

- completeness: Integrated Gradients' attributions sum to f(x) - f(baseline) (Sundararajan et al., 2017);
- deletion: removing the top-attributed units first (set to the baseline) lowers the score faster than removing
  them in random order; the area under each curve, over the fraction removed (Petsiuk et al., 2018);
- randomisation: the attributions of the trained model and of a copy with its weights shuffled should differ; a
  high rank correlation means the method shows the input, not what the model learned (Adebayo et al., 2018).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from dlforge.explain.subject import Subject
from dlforge.predictor import Predictor

DELETION_STEPS, RANDOM_ORDERS = 20, 5


def completeness(s: Subject, units: list[np.ndarray]) -> dict[str, float | None]:
    """The attributions' sum against f(x) - f(baseline); the relative error is undefined (None) when the score does
    not move between the two."""
    score, baseline = s.scores(*s.inputs)[0], s.scores(*s.baselines)[0]
    total, gap = float(sum(u.sum() for u in units)), float(score - baseline)
    error = abs(total - gap)
    moved = abs(gap) > 1e-6 * max(abs(float(score)), abs(float(baseline)), 1e-6)
    return {"attributions_sum": total, "score_gap": gap, "absolute_error": error,
            "relative_error": error / abs(gap) if moved else None, "steps": s.info.get("ig_steps")}


def deletion(s: Subject, units: list[np.ndarray], steps: int = DELETION_STEPS, orders: int = RANDOM_ORDERS,
             seed: int = 0) -> dict[str, Any]:
    flat = np.concatenate([np.ravel(u) for u in units])
    n = len(flat)
    counts = np.unique(np.linspace(0, n, min(steps, n) + 1).round().astype(int))

    def curve(order: np.ndarray) -> np.ndarray:
        removed = np.zeros((len(counts), n), dtype=bool)
        for row, k in enumerate(counts):
            removed[row, order[:k]] = True
        return s.scores(*_masked(s, removed))

    rng = np.random.default_rng(seed)
    top = curve(np.argsort(-flat, kind="stable"))
    random = np.mean([curve(rng.permutation(n)) for _ in range(orders)], axis=0)
    fractions = counts / n
    return {"fractions": fractions.tolist(), "scores": top.tolist(), "random_scores": random.tolist(),
            "auc": float(np.trapezoid(top, fractions)), "random_auc": float(np.trapezoid(random, fractions))}


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

    from dlforge.explain.core import explain, explain_item

    trained = explain(predictor, items, method, target, box, options, checks=False)
    shuffled = Predictor(predictor.task, randomised(predictor.model, seed), predictor.meta, predictor.device)
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


def _masked(s: Subject, removed: np.ndarray) -> list[torch.Tensor]:
    """(rows, units) booleans over every part's units in turn -> each part's input with those units removed."""
    out, start = [], 0
    for part in s.parts:
        size = int(np.prod(part.unit_shape))
        out.append(part.masked(torch.from_numpy(removed[:, start:start + size])))
        start += size
    return out
