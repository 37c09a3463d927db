"""Fitting group-specific decision thresholds: fairlearn's ThresholdOptimizer on a run's predicted probabilities of
the positive class. The fitted thresholds are a `GroupThresholds` (`dlforge.tasks.thresholds`), kept in the run as JSON
and applied after the classifier's postprocess.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dlforge.data.groups import group_names
from dlforge.errors import DlforgeError
from dlforge.tasks.thresholds import CONSTRAINTS, GroupThresholds


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
