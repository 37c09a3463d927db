"""Forecast metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dlforge.forecast.metrics import coverage, forecast_scores, mae, mase, pinball, rmse, smape

Y = np.array([2.0, 4.0, 6.0])
PRED = np.array([3.0, 4.0, 8.0])  # errors 1, 0, 2


def test_mae_rmse_smape() -> None:
    assert mae(Y, PRED) == pytest.approx((1 + 0 + 2) / 3)
    assert rmse(Y, PRED) == pytest.approx(math.sqrt((1 + 0 + 4) / 3))
    # 200/3 * (1/5 + 0/8 + 2/14)
    assert smape(Y, PRED) == pytest.approx(200 / 3 * (1 / 5 + 0 + 2 / 14))
    # a step where truth and forecast are both 0 adds 0, not nan
    assert smape(np.array([0.0, 2.0]), np.array([0.0, 1.0])) == pytest.approx(200 / 2 * (0 + 1 / 3))


def test_mase_scales_by_the_in_sample_seasonal_naive_error() -> None:
    history = np.array([1.0, 5.0, 2.0, 7.0, 4.0, 8.0])
    # season 2: |2-1|, |7-5|, |4-2|, |8-7| -> mean (1 + 2 + 2 + 1) / 4 = 1.5
    assert mase(Y, PRED, history, 2) == pytest.approx(1 / 1.5)
    # season 1: |4|, |3|, |5|, |3|, |4| -> mean 19 / 5
    assert mase(Y, PRED, history, 1) == pytest.approx(1 / (19 / 5))
    # a season longer than the history falls back to one step
    assert mase(Y, PRED, history, 12) == mase(Y, PRED, history, 1)
    assert math.isnan(mase(Y, PRED, np.ones(5), 1))


def test_coverage_and_pinball() -> None:
    assert coverage(Y, np.array([1.0, 4.0, 6.5]), np.array([3.0, 5.0, 7.0])) == pytest.approx(2 / 3)  # ends count
    q = np.array([[1.0, 2.0, 4.0],   # y = 2: u = 1, 0, -2
                  [3.0, 5.0, 6.0],   # y = 4: u = 1, -1, -2
                  [5.0, 6.0, 9.0]])  # y = 6: u = 1, 0, -3
    taus = [0.1, 0.5, 0.9]
    # rho(u) = max(tau u, (tau - 1) u):
    # row 1: 0.1, 0, 0.2; row 2: 0.1, 0.5, 0.2; row 3: 0.1, 0, 0.3
    assert pinball(Y, q, taus) == pytest.approx((0.3 + 0.8 + 0.4) / 9)


def test_forecast_scores_uses_the_median_and_the_outer_interval() -> None:
    q = np.stack([PRED - 1, PRED, PRED + 1], axis=1)
    history = np.array([1.0, 2.0, 3.0, 4.0])
    scores = forecast_scores(Y, q, [0.1, 0.5, 0.9], history, season=1)
    assert set(scores) == {"mase", "smape", "mae", "rmse", "coverage", "pinball"}
    assert scores["mae"] == pytest.approx(1.0) and scores["mase"] == pytest.approx(1.0)
    assert scores["coverage"] == pytest.approx(2 / 3)  # 8 - 1 = 7 > 6 misses the last
    with pytest.raises(ValueError, match=r"quantile 0\.5"):
        forecast_scores(Y, q, [0.1, 0.4, 0.9], history, season=1)
