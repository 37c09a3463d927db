"""The rolling-origin backtest of a forecasting run: the model's forecasts and the statistical baselines' on the same
folds, scored with the same metrics, per series and overall, with a figure of the last folds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlforge import plots
from dlforge._progress import progress
from dlforge.forecast.baselines import baseline_forecasts
from dlforge.forecast.metrics import forecast_scores


def backtest(items: Sequence[Any], targets: Sequence[Any], forecasts: Sequence[dict[str, Any]], enc: dict[str, Any],
             qs: Sequence[float], method: str, names: list[str], folds: int, plots_dir: Path) -> dict[str, Any]:
    """Score each fold's forecast (`forecasts[i]["quantiles"]`, (H, Q)) of `items[i]` (a series input with
    `series_id` and a `history` frame) against its truth `targets[i]`, beside the baselines `names`."""
    interval = (qs[0], qs[-1])
    cases = []  # one per (series, fold): each method's scores and quantiles
    for item, truth, out in progress(zip(items, targets, forecasts, strict=True), len(items), "backtest",
                                     min_total=20):
        history = item.history[enc["target"]].to_numpy(np.float64)
        quantiles = {method: out["quantiles"].numpy()}
        quantiles |= baseline_forecasts(history, len(truth), enc["season"], qs, names=names)
        scores = {m: forecast_scores(np.asarray(truth, np.float64), q, qs, history, enc["season"], interval)
                  for m, q in quantiles.items() if q is not None}
        cases.append({"series_id": item.series_id, "last": item.history.index[-1], "scores": scores,
                      "quantiles": quantiles, "truth": np.asarray(truth, np.float64)})
    methods = [method, *names]
    comparison = {m: _mean_scores([c["scores"][m] for c in cases if m in c["scores"]]) for m in methods}
    series = list(dict.fromkeys(c["series_id"] for c in cases))  # in order of first appearance
    per_series = {sid: {m: _mean_scores([c["scores"][m] for c in cases if c["series_id"] == sid
                                         and m in c["scores"]]) for m in methods} for sid in series}
    fitted = {m: sum(m in c["scores"] for c in cases) for m in methods}
    plots_dir.mkdir(parents=True, exist_ok=True)
    panels = _backtest_panels(items, cases, series[:8], enc, method, list(qs).index(0.5))
    plots.backtest(panels, method, plots_dir / "backtest.png")
    return {"n": len(cases), "folds": folds, "horizon": enc["horizon"],
            "interval": list(interval), "model": method, "metrics": comparison[method],
            "comparison": comparison, "fitted": fitted, "per_series": per_series,
            "headline": {"name": "mase", "value": comparison[method]["mase"]}}


def _mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    if not scores:
        return {}
    return {k: float(np.nanmean([s[k] for s in scores])) for k in scores[0]}


def _backtest_panels(items: Sequence[Any], cases: list[dict], series: list[str], enc: dict[str, Any],
                     method: str, median: int) -> list[dict[str, Any]]:
    """What `plots.backtest` draws per series: recent history, then each fold's truth and forecasts."""
    panels = []
    for sid in series:
        folds = [c for c in cases if c["series_id"] == sid]
        history = next(x.history for x in reversed(items) if x.series_id == sid)[enc["target"]]
        span = sum(len(c["truth"]) for c in folds)
        first = history.index.get_loc(folds[0]["last"]) + 1
        recent = history.iloc[max(0, first - 3 * span):first]
        panels.append({"title": sid, "median": median, "history": recent, "folds": [
            {"index": pd.date_range(c["last"], periods=len(c["truth"]) + 1, freq=enc["freq"])[1:],
             "truth": c["truth"], "quantiles": c["quantiles"][method],
             "baselines": {m: c["quantiles"][m][:, median] for m in ("seasonal_naive", "ets")
                           if c["quantiles"].get(m) is not None}} for c in folds]})
    return panels
