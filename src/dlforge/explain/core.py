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
from typing import Any

from dlforge.errors import DlforgeError
from dlforge.explain.attribution import METHODS
from dlforge.explain.checks import completeness, deletion
from dlforge.explain.explanation import Explanation
from dlforge.explain.render import picture_json
from dlforge.explain.subject import resolve_target, subject
from dlforge.predictor import Predictor
from dlforge.tasks.capabilities import Explainable, ExplainTarget


def methods(predictor: Predictor) -> tuple[str, ...]:
    """The methods for the run's inputs, its task's default first."""
    explainable = predictor.capability(Explainable)
    kind = predictor.wire.kind
    if kind not in METHODS:
        raise DlforgeError(f"{kind} inputs cannot be explained yet")
    offered = tuple(METHODS[kind])
    first = explainable.explain_method if explainable.explain_method in offered else offered[0]
    return (first, *(m for m in offered if m != first))


def explain(predictor: Predictor, items: Sequence[Any], method: str | None = None, target: str | None = None,
            box: int | None = None, options: dict[str, Any] | None = None, checks: bool = True,
            background: Sequence[Any] | None = None) -> list[Explanation]:
    """One explanation per raw item (what `predictor.predict` takes). `method`: see `methods` (default: the first);
    `target`: a class (or quantile) name, default the prediction; `box`: which detected object (0: the best);
    `options`: prediction options (e.g. detection's conf); `checks`: IG completeness and the deletion curve;
    `background`: raw items SHAP compares rows against (default: the typical row)."""
    offered = methods(predictor)
    method = method or offered[0]
    if method not in offered:
        raise DlforgeError(f"method {method!r} does not fit {predictor.wire.kind} inputs; choose {', '.join(offered)}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(predictor.prediction_options))
    if unknown:
        raise DlforgeError(f"{predictor.meta['task']} explanations take no option {', '.join(unknown)}")
    return [explain_item(predictor, item, method, resolve_target(predictor, item, target, box, options), options,
                         checks, background) for item in items]


def explain_json(predictor: Predictor, items: Sequence[Any], picture: bool = True, **kwargs: Any
                 ) -> list[dict[str, Any]]:
    """`explain`, as JSON-able dicts (with the picture, base64 PNG or HTML): what `POST /explain` answers."""
    return [{**e.to_dict(), "picture": picture_json(e)} if picture else e.to_dict()
            for e in explain(predictor, items, **kwargs)]


def explain_item(predictor: Predictor, item: Any, method: str, target: ExplainTarget, options: dict[str, Any],
                 checks: bool = True, background: Sequence[Any] | None = None) -> Explanation:
    start = time.perf_counter()
    kind = predictor.wire.kind
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
