"""Forecasting: the statsmodels baselines, forecast metrics, and `dlforge forecast`."""
