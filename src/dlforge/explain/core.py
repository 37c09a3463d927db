"""`explain(predictor, items)`: which parts of each input drove one score, the way the Predictor predicts: raw items
in, JSON-able results out (the CLI and the server call the same function).

What is explained is the task's choice (`Task.explain_target`: a class's log-odds, a detected box's score, the summed
forecast of a quantile); which methods apply follows the input kind (`task.wire.kind`). Nothing here names a task.

Explaining puts forward hooks on the predictor's model for a moment (Captum's, and ours on embedding layers): run it
where no prediction runs on the same model at the same time (a server: in the model's thread, or on a Predictor of
its own).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlforge.errors import DlforgeError
from dlforge.explain.attribution import METHODS
from dlforge.explain.checks import completeness, deletion
from dlforge.explain.subject import Part, resolve_target, subject
from dlforge.predictor import Predictor
from dlforge.tasks.base import ExplainTarget, Task

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

    def to_dict(self, picture: bool = False) -> dict[str, Any]:
        """JSON-able: method, target, score, prediction, attributions per part (all values of small parts, the top
        units of large ones), checks; with `picture`, the PNG (base64) or HTML that `write` saves."""
        out = {"kind": self.kind, "method": self.method, "target": self.target, "score": self.score,
               "prediction": self.prediction,
               "attributions": [_summary(p, u) for p, u in zip(self.parts, self.units, strict=True)],
               "checks": self.checks, "seconds": round(self.seconds, 3)}
        if picture:
            from dlforge.explain.render import picture_json

            out["picture"] = picture_json(self)
        return out


def methods(task: Task) -> tuple[str, ...]:
    """The methods for this task's inputs, its default first."""
    kind = task.wire.kind
    if kind not in METHODS:
        raise DlforgeError(f"{kind} inputs cannot be explained yet")
    offered = tuple(METHODS[kind])
    first = task.explain_method if task.explain_method in offered else offered[0]
    return (first, *(m for m in offered if m != first))


def explain(predictor: Predictor, items: Sequence[Any], method: str | None = None, target: str | None = None,
            box: int | None = None, options: dict[str, Any] | None = None, checks: bool = True,
            background: Sequence[Any] | None = None) -> list[Explanation]:
    """One explanation per raw item (what `predictor.predict` takes). `method`: see `methods` (default: the first);
    `target`: a class (or quantile) name, default the prediction; `box`: which detected object (0: the best);
    `options`: prediction options (e.g. detection's conf); `checks`: IG completeness and the deletion curve;
    `background`: raw items SHAP compares rows against (default: the typical row)."""
    task = predictor.task
    offered = methods(task)
    method = method or offered[0]
    if method not in offered:
        raise DlforgeError(f"method {method!r} does not fit {task.wire.kind} inputs; choose {', '.join(offered)}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(task.prediction_options))
    if unknown:
        raise DlforgeError(f"{predictor.meta['task']} explanations take no option {', '.join(unknown)}")
    return [explain_item(predictor, item, method, resolve_target(predictor, item, target, box, options), options,
                         checks, background) for item in items]


def explain_json(predictor: Predictor, items: Sequence[Any], picture: bool = True, **kwargs: Any
                 ) -> list[dict[str, Any]]:
    """`explain`, as JSON-able dicts (with the picture, base64 PNG or HTML): what `POST /explain` answers."""
    return [e.to_dict(picture=picture) for e in explain(predictor, items, **kwargs)]


def explain_item(predictor: Predictor, item: Any, method: str, target: ExplainTarget, options: dict[str, Any],
                 checks: bool = True, background: Sequence[Any] | None = None) -> Explanation:
    start = time.perf_counter()
    kind = predictor.task.wire.kind
    s = subject(predictor, item, target, options)
    s.background = background
    units = METHODS[kind][method](s, item)
    found: dict[str, Any] = {}
    if checks and method == "ig":
        found["completeness"] = completeness(s, units)
    if checks:
        found["deletion"] = deletion(s, units)
    prediction = predictor.predict([item], **options)[0]
    return Explanation(item, kind, method, target.about, float(s.scores(*s.inputs)[0]), prediction, s.parts, units,
                       found, time.perf_counter() - start, target, options)


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
