"""The baselines every forecasting evaluation shows beside the model: naive, seasonal-naive, ETS, ARIMA.

Each maps a history (T,) in original units to quantile forecasts (horizon, Q), or None when the method
does not fit the series (too short, or no configuration converges). Naive and seasonal-naive intervals
follow fpp3 (Hyndman & Athanasopoulos, section 5.5); ETS and ARIMA are statsmodels' own, with their
Gaussian forecast distributions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dlforge.registry import Registry

BASELINES: Registry = Registry("baseline")


def _gaussian(mean: np.ndarray, sd: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """(H, Q) quantiles of independent normals with these means and standard deviations."""
    from scipy.stats import norm

    return mean[:, None] + sd[:, None] * norm.ppf(np.asarray(quantiles, dtype=float))[None, :]


@BASELINES.register("naive")
def naive(history: np.ndarray, horizon: int, season: int, quantiles: Sequence[float]) -> np.ndarray | None:
    """The last value, with sd sigma * sqrt(h); sigma = root mean square of the one-step changes."""
    return seasonal_naive(history, horizon, 1, quantiles)


@BASELINES.register("seasonal_naive")
def seasonal_naive(history: np.ndarray, horizon: int, season: int, quantiles: Sequence[float]
                   ) -> np.ndarray | None:
    """The value one season back, y[T + h - m(k + 1)] with k = floor((h - 1) / m), and sd sigma * sqrt(k + 1);
    sigma = root mean square of the seasonal differences y[t] - y[t - m] (no parameter is estimated)."""
    m = max(season, 1)
    if len(history) <= m:
        return None
    h = np.arange(1, horizon + 1)
    k = (h - 1) // m
    mean = history[len(history) + h - m * (k + 1) - 1]
    sigma = math.sqrt(np.mean((history[m:] - history[:-m]) ** 2))
    return _gaussian(mean, sigma * np.sqrt(k + 1), quantiles)


@BASELINES.register("ets")
def ets(history: np.ndarray, horizon: int, season: int, quantiles: Sequence[float]) -> np.ndarray | None:
    """statsmodels' ETSModel with additive errors; trend none / additive / damped, additive season when two
    full seasons and more are known; the configuration with the lowest AICc wins."""
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    if len(history) < 10:
        return None
    seasonal = season > 1 and len(history) >= 2 * season + 10
    configs = [(trend, damped, s) for s in ((None, "add") if seasonal else (None,))
               for trend, damped in ((None, False), ("add", False), ("add", True))]
    # a pandas Series: statsmodels' get_prediction fails on a bare array (its row labels)
    series = pd.Series(history)
    best = _lowest([lambda t=trend, d=damped, s=s: ETSModel(series, error="add", trend=t, damped_trend=d, seasonal=s,
                                                            seasonal_periods=season if s else None).fit(disp=False)
                    for trend, damped, s in configs], "aicc")
    if best is None:
        return None
    prediction = best.get_prediction(start=len(history), end=len(history) + horizon - 1)
    mean, var = np.asarray(prediction.predicted_mean), np.asarray(prediction.var_pred_mean)
    return _finite(_gaussian(mean, np.sqrt(np.maximum(var, 0)), quantiles))


@BASELINES.register("arima")
def arima(history: np.ndarray, horizon: int, season: int, quantiles: Sequence[float]) -> np.ndarray | None:
    """statsmodels' ARIMA, the lowest AIC of (p, q) in (0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (2, 1), (2, 2).

    d = 1 (then with drift) when two unit-root tests agree: KPSS rejects stationarity and ADF does not
    reject a unit root, both at 5% (KPSS alone rejects a stationary AR(1) one time in twenty, and
    differencing it ruins the forecast). A seasonal (0, 1, 1) term, the airline model's, joins for seasons
    of 2 to 12 steps where the season is real: the seasonal-naive forecast beats the naive one on the
    history. Longer seasons (weekly data: 52) make the state space too large to fit in seconds, so those
    series get a non-seasonal ARIMA. A full grid costs seconds per fit on non-stationary data, and a
    backtest fits every fold.
    """
    from statsmodels.tsa.arima.model import ARIMA
    from statsmodels.tsa.stattools import adfuller, kpss

    if len(history) < 20:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KPSS warns when its p-value is outside its table
        d = int(kpss(history, regression="c", nlags="auto")[1] < 0.05 and adfuller(history)[1] >= 0.05)
    seasonal = (1 < season <= 12 and len(history) >= 3 * season
                and np.abs(history[season:] - history[:-season]).mean() < np.abs(np.diff(history)).mean())
    seasonal_order = (0, 1, 1, season) if seasonal else (0, 0, 0, 0)
    integration = d + seasonal_order[1]
    # the constant: a mean without differencing, a drift with one difference (statsmodels drops lower orders)
    trend = "c" if integration == 0 else "t" if integration == 1 else "n"
    best = _lowest([lambda p=p, q=q: ARIMA(history, order=(p, d, q), seasonal_order=seasonal_order, trend=trend).fit()
                    for p, q in ((0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (2, 1), (2, 2))], "aic")
    if best is None:
        return None
    forecast = best.get_forecast(horizon)
    return _finite(_gaussian(np.asarray(forecast.predicted_mean), np.asarray(forecast.se_mean), quantiles))


def _lowest(fits: list[Callable[[], Any]], criterion: str) -> Any:
    """The fitted model with the lowest finite `criterion` (aic, aicc) among the candidates that fit; None
    if none does. Convergence warnings are silenced: a poor fit loses on the criterion anyway."""
    best = None
    for fit in fits:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = fit()
        except (ValueError, np.linalg.LinAlgError):
            continue
        score = getattr(result, criterion)
        if np.isfinite(score) and (best is None or score < getattr(best, criterion)):
            best = result
    return best


def _finite(q: np.ndarray) -> np.ndarray | None:
    return q if np.isfinite(q).all() else None


def baseline_forecasts(history: np.ndarray, horizon: int, season: int, quantiles: Sequence[float],
                       names: Sequence[str] | None = None) -> dict[str, np.ndarray | None]:
    """{name: (horizon, Q) quantiles or None} for every baseline, or those `names`."""
    history = np.asarray(history, dtype=np.float64)
    return {name: BASELINES.get(name)(history, horizon, season, quantiles) for name in names or BASELINES.names()}
