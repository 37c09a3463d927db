"""Baselines: naive and seasonal-naive against hand-computed forecasts and intervals; ETS and ARIMA on series
whose future is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from dlforge.forecast.baselines import BASELINES, arima, baseline_forecasts, ets, naive, seasonal_naive

QS = [0.1, 0.5, 0.9]
Z90 = norm.ppf(0.9)  # 1.2816


def test_naive_by_hand() -> None:
    y = np.array([10.0, 12.0, 11.0, 14.0, 13.0])
    # one-step changes 2, -1, 3, -1 -> sigma = sqrt((4 + 1 + 9 + 1) / 4)
    sigma = math.sqrt(15 / 4)
    q = naive(y, 3, 4, QS)
    np.testing.assert_allclose(q[:, 1], [13.0, 13.0, 13.0])
    np.testing.assert_allclose(q[:, 2] - q[:, 1], Z90 * sigma * np.sqrt([1, 2, 3]))
    np.testing.assert_allclose(q[:, 1] - q[:, 0], Z90 * sigma * np.sqrt([1, 2, 3]))


def test_seasonal_naive_by_hand() -> None:
    y = np.array([1.0, 5.0, 3.0, 8.0, 2.0, 6.0, 4.0, 7.0, 3.0, 7.0])  # season 4
    # seasonal differences y[t] - y[t-4]: 2-1, 6-5, 4-3, 7-8, 3-2, 7-6 = 1, 1, 1, -1, 1, 1 -> sigma = 1
    q = seasonal_naive(y, 6, 4, QS)
    # the last season is y[6:10] = 4, 7, 3, 7, repeated: steps 1-4 -> k = 0, steps 5-6 -> k = 1
    np.testing.assert_allclose(q[:, 1], [4.0, 7.0, 3.0, 7.0, 4.0, 7.0])
    np.testing.assert_allclose(q[:, 2] - q[:, 1], Z90 * np.array([1, 1, 1, 1, math.sqrt(2), math.sqrt(2)]))
    np.testing.assert_allclose(seasonal_naive(y, 3, 1, QS), naive(y, 3, 1, QS))
    assert seasonal_naive(y[:4], 3, 4, QS) is None  # no full season before the last value


def test_ets_continues_a_line_and_repeats_a_season() -> None:
    t = np.arange(60, dtype=float)
    q = ets(5 + 0.5 * t, 6, 1, QS)
    np.testing.assert_allclose(q[:, 1], 5 + 0.5 * np.arange(60, 66), rtol=1e-3)
    pattern = np.array([0.0, 3.0, -1.0, 2.0])
    seasonal = 10 + 0.1 * t + np.tile(pattern, 15)
    q = ets(seasonal, 8, 4, QS)
    future = 10 + 0.1 * np.arange(60, 68) + np.tile(pattern, 2)
    np.testing.assert_allclose(q[:, 1], future, atol=0.05)


def test_arima_on_an_ar1_process() -> None:
    rng = np.random.default_rng(0)
    phi, sigma = 0.8, 1.0
    y = np.zeros(300)
    for i in range(1, 300):
        y[i] = phi * y[i - 1] + rng.normal(0, sigma)
    q = arima(y, 5, 1, QS)
    expected = phi ** np.arange(1, 6) * y[-1]
    np.testing.assert_allclose(q[:, 1], expected, atol=0.35)
    width = q[0, 2] - q[0, 0]
    assert width == pytest.approx(2 * Z90 * sigma, rel=0.15)


@pytest.mark.parametrize("name", BASELINES.names())
def test_every_baseline_returns_sorted_quantiles_or_none(name: str) -> None:
    rng = np.random.default_rng(1)
    y = 20 + np.cumsum(rng.normal(0, 1, 80)) + 3 * np.sin(np.arange(80) * 2 * np.pi / 12)
    q = BASELINES.get(name)(y, 12, 12, [0.05, 0.25, 0.5, 0.75, 0.95])
    assert q.shape == (12, 5) and np.isfinite(q).all()
    assert (np.diff(q, axis=1) >= 0).all()
    assert BASELINES.get(name)(y[:1], 12, 12, QS) is None  # too short: none, not an exception


def test_baselines_fit_a_long_weekly_series() -> None:
    from dlforge.data.series import read_series

    data = read_series("builtin:co2")
    y = data.frames["co2"]["co2"].to_numpy()[:-52]
    forecasts = baseline_forecasts(y, 52, data.season, QS)
    assert all(q is not None and q.shape == (52, 3) for q in forecasts.values())
    truth = data.frames["co2"]["co2"].to_numpy()[-52:]
    # ETS's seasonal model beats a flat line by far on a year of CO2
    assert np.abs(forecasts["ets"][:, 1] - truth).mean() < 0.6 * np.abs(forecasts["naive"][:, 1] - truth).mean()
