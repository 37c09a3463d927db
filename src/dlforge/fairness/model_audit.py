"""The model audit, by fairlearn: per group, accuracy, selection rate, true and false positive rates and calibration
(mean predicted probability of the positive class beside the observed positive rate, and the Brier score), each
with a bootstrap interval (`MetricFrame(n_boot=..., ci_quantiles=...)`); then demographic-parity difference and
ratio and equalized-odds difference over the groups large enough to compare.

Everything is one-vs-rest of the positive class: y_true and y_pred are 0/1 (positive or not).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import pandas as pd

CI = (0.025, 0.975)
FOUR_FIFTHS = 0.8
RATES = ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate")
CALIBRATION = ("mean_probability", "positive_rate", "brier_score")


def _mean_probability(y_true: np.ndarray, y_pred: np.ndarray, probability: np.ndarray) -> float:
    return float(np.mean(probability))


def _positive_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true))


def _brier(y_true: np.ndarray, y_pred: np.ndarray, probability: np.ndarray) -> float:
    from sklearn.metrics import brier_score_loss

    return float(brier_score_loss(y_true, probability, pos_label=1))


def metric_frame(y_true: np.ndarray, y_pred: np.ndarray, probability: np.ndarray, groups: np.ndarray, column: str,
                 n_boot: int | None = None, seed: int = 0) -> Any:
    """fairlearn's MetricFrame of every audited metric (with bootstrap intervals when `n_boot`)."""
    from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score

    metrics = {"accuracy": accuracy_score,
               "selection_rate": functools.partial(selection_rate, pos_label=1),
               "true_positive_rate": functools.partial(true_positive_rate, pos_label=1),
               "false_positive_rate": functools.partial(false_positive_rate, pos_label=1),
               "mean_probability": _mean_probability, "positive_rate": _positive_rate, "brier_score": _brier}
    boot = {"n_boot": n_boot, "ci_quantiles": list(CI), "random_state": seed} if n_boot else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a group without positives: its TPR is 0 (sklearn warns)
        return MetricFrame(metrics=metrics, y_true=np.asarray(y_true), y_pred=np.asarray(y_pred),
                           sensitive_features=pd.Series(np.asarray(groups).astype(str), name=column),
                           sample_params={"mean_probability": {"probability": np.asarray(probability)},
                                          "brier_score": {"probability": np.asarray(probability)}}, **boot)


def summary(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, compared: list[str]) -> dict[str, Any]:
    """fairlearn's demographic-parity difference and ratio and equalized-odds difference over the rows of the
    `compared` groups; `four_fifths_flag` when the ratio is under 0.8."""
    from fairlearn.metrics import (
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
    )

    at = np.isin(np.asarray(groups).astype(str), compared)
    args = (np.asarray(y_true)[at], np.asarray(y_pred)[at])
    kw = {"sensitive_features": np.asarray(groups).astype(str)[at]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {"demographic_parity_difference": float(demographic_parity_difference(*args, **kw)),
               "demographic_parity_ratio": float(demographic_parity_ratio(*args, **kw)),
               "equalized_odds_difference": float(equalized_odds_difference(*args, **kw))}
    return {**out, "four_fifths_flag": out["demographic_parity_ratio"] < FOUR_FIFTHS, "groups_compared": compared}


def audit_column(y_true: np.ndarray, y_pred: np.ndarray, probability: np.ndarray, groups: np.ndarray, column: str,
                 compared: list[str], n_boot: int | None, seed: int = 0) -> dict[str, Any]:
    """{by_group: {group: {count, small, metric: {value, low, high}}}, overall: {...}, summary: {...}}."""
    frame = metric_frame(y_true, y_pred, probability, groups, column, n_boot, seed)
    low, high = frame.by_group_ci if n_boot else (None, None)
    overall_low, overall_high = frame.overall_ci if n_boot else (None, None)
    by_group = {}
    names = np.asarray(groups).astype(str)
    for name, row in frame.by_group.iterrows():
        entry: dict[str, Any] = {"count": int((names == str(name)).sum()), "small": str(name) not in compared}
        for metric in (*RATES, *CALIBRATION):
            entry[metric] = _interval(row[metric], low, high, name, metric)
        by_group[str(name)] = entry
    overall = {m: _interval(frame.overall[m], overall_low, overall_high, None, m) for m in (*RATES, *CALIBRATION)}
    return {"by_group": by_group, "overall": {"count": len(y_true), **overall},
            "summary": summary(y_true, y_pred, groups, compared)}


def _interval(value: Any, low: Any, high: Any, group: Any, metric: str) -> dict[str, float | None]:
    def pick(table: Any) -> float | None:
        if table is None:
            return None
        return _number(table[metric] if group is None else table.loc[group, metric])

    return {"value": _number(value), "low": pick(low), "high": pick(high)}


def _number(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value
