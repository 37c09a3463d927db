"""Group-specific decision thresholds applied after a classifier's postprocess: a run's
`fairness/thresholds.json` (written by `dlforge audit --mitigate threshold`, never a pickle) turns calibrated
probabilities and each item's group into decisions.

Each group decides with probability p0 by `score op0 t0`, otherwise by `score op1 t1` (fairlearn's ThresholdOptimizer,
Hardt et al. 2016). The randomness is drawn from a hash of the input, so one input always gets one answer. Nothing here
imports fairlearn or sklearn: the Predictor (and so the server) loads this with every run.
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
from dlforge.data.groups import group_name
from dlforge.errors import DlforgeError
from dlforge.tasks.base import significant

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
            out.append({**prediction, "label": classes[j], "confidence": significant(float(p[j]))})
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
