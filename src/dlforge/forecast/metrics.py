"""Forecast accuracy, as the M4 competition and Hyndman & Athanasopoulos (fpp3) define it.

Every function takes one forecast: y and pred are (H,) arrays, q_pred (H, Q) quantiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("mase", "smape", "mae", "rmse", "coverage", "pinball")
# Lower is better for all but coverage, whose goodness is its closeness to the interval's nominal level.
LOWER_IS_BETTER = ("mase", "smape", "mae", "rmse", "pinball")


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(y - pred)))


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - pred) ** 2)))


def smape(y: np.ndarray, pred: np.ndarray) -> float:
    """Symmetric MAPE in percent (0 to 200): 200/H * sum |y - pred| / (|y| + |pred|); a 0/0 term counts 0."""
    denominator = np.abs(y) + np.abs(pred)
    terms = np.divide(np.abs(y - pred), denominator, out=np.zeros_like(denominator, dtype=float),
                      where=denominator > 0)
    return float(200 * np.mean(terms))


def mase(y: np.ndarray, pred: np.ndarray, history: np.ndarray, season: int) -> float:
    """MAE over the in-sample MAE of the seasonal-naive forecast on `history` (m = season; 1 when the history
    holds no full season). Below 1 beats that forecast's one-step error on its own history; nan when the
    history never changes."""
    m = season if len(history) > season else 1
    scale = np.mean(np.abs(history[m:] - history[:-m])) if len(history) > m else 0.0
    return float(mae(y, pred) / scale) if scale > 0 else float("nan")


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of y inside [lower, upper]."""
    return float(np.mean((y >= lower) & (y <= upper)))


def pinball(y: np.ndarray, q_pred: np.ndarray, quantiles: Sequence[float]) -> float:
    """Mean pinball loss over steps and quantiles: rho_tau(u) = max(tau u, (tau - 1) u), u = y - q."""
    tau = np.asarray(quantiles, dtype=float)  # (Q,)
    u = y[:, None] - q_pred  # (H, Q)
    return float(np.mean(np.maximum(tau * u, (tau - 1) * u)))


def forecast_scores(y: np.ndarray, q_pred: np.ndarray, quantiles: Sequence[float], history: np.ndarray,
                    season: int, interval: tuple[float, float] = (0.1, 0.9)) -> dict[str, float]:
    """Every metric of one quantile forecast; the point forecast is the median column."""
    qs = list(quantiles)
    for q in (0.5, *interval):
        if q not in qs:
            raise ValueError(f"quantile {q} is not among the forecast's quantiles {qs}")
    point = q_pred[:, qs.index(0.5)]
    return {"mase": mase(y, point, history, season), "smape": smape(y, point), "mae": mae(y, point),
            "rmse": rmse(y, point),
            "coverage": coverage(y, q_pred[:, qs.index(interval[0])], q_pred[:, qs.index(interval[1])]),
            "pinball": pinball(y, q_pred, qs)}
