"""Forecasting's statistics, below the forecasting task: the statsmodels baselines, forecast metrics, and the
rolling-origin backtest that scores a run against them. `dlforge forecast` (forecasts past the data's end) is
`dlforge.future`."""
