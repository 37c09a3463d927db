"""`dlforge forecast`: a finished forecasting run's quantile forecasts past the end of the data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlforge._io import atomic_write, atomic_write_json
from dlforge.predictor import Predictor
from dlforge.run import Run
from dlforge.tasks.capabilities import ForecastsAhead


def forecast_run(run_dir: str | os.PathLike, horizon: int | None = None, data: str | None = None,
                 future: str | None = None, out: str | os.PathLike | None = None,
                 device: str = "cpu") -> tuple[list[dict[str, Any]], Path]:
    """Forecast every series of `data` (default: the run's own data) `horizon` steps past its end.

    Writes forecast.json, forecast.csv (one row per series and step) and forecast.png into `out`
    (default `<run>/forecasts/<data name>/`); returns (forecasts, out).
    `future` is a table of the known-future covariates (timestamp, series_id, columns) for the steps ahead.
    """
    run = Run.open(run_dir)
    predictor = Predictor.from_run(run, device=device)
    meta = predictor.meta
    items = predictor.capability(ForecastsAhead).future_items(meta, data, future)
    forecasts = predictor.predict(items, horizon=horizon)
    name = "data" if data is None else Path(data.rstrip("/")).stem.replace(":", "_")
    out = Path(out) if out is not None else run.path / "forecasts" / name
    _write(forecasts, items, meta, out)
    return forecasts, out


def _write(forecasts: list[dict[str, Any]], items: list[Any], meta: dict[str, Any], out: Path) -> None:
    from dlforge import plots

    names = [key for key in forecasts[0] if key not in ("series_id", "timestamps")] if forecasts else []
    atomic_write_json(out / "forecast.json", forecasts)
    rows = pd.DataFrame([{"series_id": f["series_id"], "timestamp": stamp, **{n: f[n][i] for n in names}}
                         for f in forecasts for i, stamp in enumerate(f["timestamps"])])
    atomic_write(out / "forecast.csv", lambda p: rows.to_csv(p, index=False))
    enc = meta["encoding"]
    panels = []
    for f, item in list(zip(forecasts, items, strict=True))[:8]:
        shown = max(4 * len(f["timestamps"]), enc["lookback"])
        panels.append({"title": f["series_id"], "history": item.history[enc["target"]].iloc[-shown:],
                       "index": pd.DatetimeIndex(f["timestamps"]), "median": meta["quantiles"].index(0.5),
                       "quantiles": np.array([f[n] for n in names]).T,
                       "band": f"{names[0]}-{names[-1]}"})
    plots.forecast(panels, out / "forecast.png")
