"""Group-specific decision thresholds: fairlearn's ThresholdOptimizer, fitted on a run's predicted probabilities of
the positive class, kept in the run as JSON (`fairness/thresholds.json`, never a pickle) and applied by the Predictor.

ThresholdOptimizer (Hardt et al. 2016) decides per group: with probability p0 by `score op0 t0`, otherwise by
`score op1 t1`, so each group's positive rate meets the constraint (demographic parity: equal selection rates;
equalized odds: equal true and false positive rates) at the best accuracy. Its randomness is drawn here from a hash
of the input, so one input always gets one answer. This module imports neither fairlearn nor sklearn at load: the
server loads it with every run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlforge._io import atomic_write_json
from dlforge.errors import DlforgeError
from dlforge.fairness.groups import group_name, group_names

log = logging.getLogger("dlforge")

THRESHOLDS = Path("fairness") / "thresholds.json"
CONSTRAINTS = ("demographic_parity", "equalized_odds")


@dataclass
class GroupThresholds:
    column: str  # the sensitive column the groups are read from, in each item
    positive: str  # the class whose probability is thresholded
    constraint: str
    groups: dict[str, dict[str, Any]]  # group -> {p0, operator0, threshold0, p1, operator1, threshold1}
    fitted_on: dict[str, Any]  # where and on how many rows

    # ------------------------------------------------------------ the decision
    def positive_rate(self, scores: np.ndarray, groups: Sequence[str]) -> np.ndarray:
        """(N,) probability of deciding positive, as fairlearn's `_pmf_predict`; NaN for a group it was not fit on."""
        scores, groups = np.asarray(scores, dtype=np.float64), np.asarray(groups, dtype=object)
        out = np.full(len(scores), np.nan)
        for name, g in self.groups.items():
            at = groups == name
            rate = g["p0"] * _op(scores[at], g["operator0"], g["threshold0"]) \
                + g["p1"] * _op(scores[at], g["operator1"], g["threshold1"])
            if "p_ignore" in g:
                rate = g["p_ignore"] * g["prediction_constant"] + (1 - g["p_ignore"]) * rate
            out[at] = rate
        return out

    def decide(self, scores: np.ndarray, groups: Sequence[str], draws: np.ndarray, own: np.ndarray) -> np.ndarray:
        """(N,) bool: positive where the input's draw in [0, 1) falls under its positive rate; in a group the
        thresholds were not fit on, the model's `own` decision (N,) bool."""
        rate = self.positive_rate(scores, groups)
        unseen = np.isnan(rate)
        if unseen.any():
            log.warning("group thresholds by %r: no threshold for group(s) %s; the model decides alone there",
                        self.column, sorted({str(g) for g in np.asarray(groups, dtype=object)[unseen]}))
        return np.where(unseen, own, np.asarray(draws) < np.nan_to_num(rate))

    def apply(self, task: Any, meta: dict[str, Any], items: Sequence[Any], outputs: Any,
              predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Predictions with the thresholds' decisions: `label` is the positive class where decided, otherwise the
        likeliest other class; `confidence` is the probability of that label; `probabilities` stay the model's."""
        classes = meta["classes"]
        k = classes.index(self.positive)
        probs = task.probabilities(outputs, meta).numpy()  # (N, K), calibrated
        groups = [group_name(_value(item, self.column, i)) for i, item in enumerate(items)]
        positive = self.decide(probs[:, k], groups, draws(items), probs.argmax(1) == k)
        others = probs.copy()
        others[:, k] = -np.inf
        out = []
        for p, prediction, yes, other in zip(probs, predictions, positive, others.argmax(1), strict=True):
            j = k if yes else int(other)
            out.append({**prediction, "label": classes[j], "confidence": round(float(p[j]), 6)})
        return out

    # ------------------------------------------------------------ the file
    def save(self, run_dir: str | Path) -> Path:
        data = asdict(self)
        data["groups"] = {g: {k: _finite(v) for k, v in t.items()} for g, t in self.groups.items()}
        return atomic_write_json(Path(run_dir) / THRESHOLDS, data)

    @classmethod
    def load(cls, run_dir: str | Path) -> GroupThresholds | None:
        """The run's thresholds, or None when it has none."""
        path = Path(run_dir) / THRESHOLDS
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            data["groups"] = {g: {k: float(v) if k.startswith(("threshold", "p")) else v for k, v in t.items()}
                              for g, t in data["groups"].items()}
            return cls(**data)
        except (ValueError, KeyError, TypeError) as e:
            raise DlforgeError(f"{path}: not a thresholds file ({e}); audit again with --mitigate threshold") from None


def fit_thresholds(scores: np.ndarray, y: np.ndarray, groups: Sequence[Any], column: str, positive: str,
                   constraint: str = "demographic_parity", fitted_on: dict[str, Any] | None = None
                   ) -> tuple[GroupThresholds, Any]:
    """fairlearn's ThresholdOptimizer (objective: accuracy), prefit on the positive-class probabilities `scores` with
    0/1 targets `y`: (its per-group interpolation as JSON-able numbers, the fitted optimizer)."""
    from fairlearn.postprocessing import ThresholdOptimizer

    if constraint not in CONSTRAINTS:
        raise DlforgeError(f"--constraint {constraint!r}: choose {' or '.join(CONSTRAINTS)}")
    from sklearn.base import BaseEstimator

    class Scores(BaseEstimator):
        """A prefit 'estimator' whose prediction is its input's one column: the positive-class probability."""

        def fit(self, *args: Any) -> Scores:
            self.fitted_ = True
            return self

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.asarray(x)[:, 0]

    names = group_names(list(groups)).astype(str)
    optimizer = ThresholdOptimizer(estimator=Scores().fit(), constraints=constraint, objective="accuracy_score",
                                   prefit=True, predict_method="predict")
    optimizer.fit(np.asarray(scores, dtype=np.float64)[:, None], np.asarray(y).astype(int), sensitive_features=names)
    found = {}
    for name, b in optimizer.interpolated_thresholder_.interpolation_dict.items():
        found[str(name)] = {"p0": float(b.p0), "operator0": b.operation0.operator,
                            "threshold0": float(b.operation0.threshold), "p1": float(b.p1),
                            "operator1": b.operation1.operator, "threshold1": float(b.operation1.threshold)}
        if "p_ignore" in b:
            found[str(name)] |= {"p_ignore": float(b.p_ignore), "prediction_constant": float(b.prediction_constant)}
    return GroupThresholds(column, positive, constraint, found, fitted_on or {"rows": len(names)}), optimizer


def draws(items: Sequence[Any]) -> np.ndarray:
    """(N,) numbers in [0, 1), each fixed by its input: the SHA-256 of its canonical JSON (keys sorted, numbers as
    numbers: 39 and 39.0 alike), or of its bytes."""
    out = []
    for item in items:
        if isinstance(item, bytes | np.ndarray):
            data = item.tobytes() if isinstance(item, np.ndarray) else item
        else:
            data = json.dumps(_canonical(item), sort_keys=True, default=str).encode()
        out.append(int.from_bytes(hashlib.sha256(data).digest()[:8], "big") / 2 ** 64)
    return np.array(out, dtype=np.float64)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if hasattr(value, "item") and not isinstance(value, np.ndarray):  # numpy scalars
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else int(value) if value.is_integer() else value
    return value


def _value(item: Any, column: str, i: int) -> Any:
    if not isinstance(item, dict) or column not in item:
        raise DlforgeError(f"item {i}: this model decides with group thresholds by {column!r} "
                           f"({THRESHOLDS}); give each item as an object with a {column!r} value")
    return item[column]


def _op(scores: np.ndarray, operator: str, threshold: float) -> np.ndarray:
    return scores > threshold if operator == ">" else scores < threshold


def _finite(value: Any) -> Any:
    """JSON has no infinity: ±inf thresholds as the strings 'inf' and '-inf' (float() reads them back)."""
    return str(value) if isinstance(value, float) and math.isinf(value) else value
