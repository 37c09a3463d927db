"""Trust checks of explanations (ours, short).

- completeness: Integrated Gradients' attributions sum to f(x) - f(baseline) (Sundararajan et al., 2017);
- deletion: removing the top-attributed units first (set to the baseline) lowers the score faster than removing
  them in random order; the area under each curve, over the fraction removed (Petsiuk et al., 2018);

The model-randomisation check (Adebayo et al., 2018) explains whole items again, so it is `explain.randomisation`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dlforge.explain.subject import Subject

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


def _masked(s: Subject, removed: np.ndarray) -> list[torch.Tensor]:
    """(rows, units) booleans over every part's units in turn -> each part's input with those units removed."""
    out, start = [], 0
    for part in s.parts:
        size = int(np.prod(part.unit_shape))
        out.append(part.masked(torch.from_numpy(removed[:, start:start + size])))
        start += size
    return out
