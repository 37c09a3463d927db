"""One explanation: what was explained of an item, by which method, its attributions per input part, and checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlforge.explain.subject import Part
from dlforge.tasks.capabilities import ExplainTarget

FULL_VALUES = 1024  # parts with at most this many units carry every value in JSON; larger ones their top units
TOP = 10


@dataclass
class Explanation:
    item: Any
    kind: str  # the input kind: image, text, series, ...
    method: str
    target: dict[str, Any]  # what was explained (the task's words)
    score: float  # the explained score at the input
    prediction: dict[str, Any]  # the Predictor's prediction of the item
    parts: list[Part]
    units: list[np.ndarray]  # attributions per part, one per unit
    checks: dict[str, Any]  # completeness (ig), deletion
    seconds: float
    resolved: ExplainTarget = field(repr=False)
    options: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: method, target, score, prediction, attributions per part (all values of small parts, the top
        units of large ones), checks."""
        return {"kind": self.kind, "method": self.method, "target": self.target, "score": self.score,
                "prediction": self.prediction,
                "attributions": [_summary(p, u) for p, u in zip(self.parts, self.units, strict=True)],
                "checks": self.checks, "seconds": round(self.seconds, 3)}


def _summary(part: Part, units: np.ndarray) -> dict[str, Any]:
    values = np.asarray(units, dtype=np.float64)
    order = np.argsort(-np.abs(values), axis=None, kind="stable")[:TOP]
    top = []
    for flat in order:
        at = [int(i) for i in np.unravel_index(flat, values.shape)]
        label = part.labels[at[-1] if at else 0] if part.labels else None
        top.append({"at": at, "label": label, "value": float(values.flat[flat])})
    out = {"name": part.name, "shape": list(values.shape), "sum": float(values.sum()), "top": top}
    if values.size <= FULL_VALUES:
        out["values"] = values.tolist()
        if part.labels:
            out["labels"] = part.labels
    return out
