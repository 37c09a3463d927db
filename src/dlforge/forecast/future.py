"""`dlforge forecast`: a finished forecasting run's quantile forecasts past the end of the data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlforge._io import atomic_write, atomic_write_json
from dlforge.errors import DataError, DlforgeError
from dlforge.predictor import Predictor
from dlforge.run import Run


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
    if meta["task"] != "forecasting":
        raise DlforgeError(f"{run.path}: a {meta['task']} run; dlforge forecast needs a forecasting run")
    from dlforge.tasks.forecasting import SeriesInput

    series = predictor.task.read(data)
    ahead = _future_covariates(future, predictor.task.spec.data) if future else {}
    items = [SeriesInput(sid, frame, ahead.get(sid, ahead.get("")), series.static[sid])
             for sid, frame in series.frames.items()]
    forecasts = predictor.predict(items, horizon=horizon)
    name = "data" if data is None else Path(data.rstrip("/")).stem.replace(":", "_")
    out = Path(out) if out is not None else run.path / "forecasts" / name
    _write(forecasts, items, meta, out)
    return forecasts, out


def _future_covariates(path: str, d: Any) -> dict[str, pd.DataFrame]:
    """series_id -> the known-future covariates of the steps ahead, indexed by timestamp."""
    p = Path(path)
    try:
        table = pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(p)
    except Exception as e:  # pandas raises many types for a bad file
        raise DataError(f"{p}: cannot read the future covariates: {e}") from None
    needed = [d.timestamp, *d.known_future] + ([d.series_id] if d.series_id in table.columns else [])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DataError(f"{p}: no column {missing[0]!r}; columns: {', '.join(map(str, table.columns))}")
    table[d.timestamp] = pd.to_datetime(table[d.timestamp])
    if d.series_id not in table.columns:
        return {"": table.set_index(d.timestamp)}
    return {str(sid): rows.set_index(d.timestamp) for sid, rows in table.groupby(d.series_id)}


def _write(forecasts: list[dict[str, Any]], items: list[Any], meta: dict[str, Any], out: Path) -> None:
    from dlforge.report import plots
    from dlforge.tasks.forecasting import quantile_name

    names = [quantile_name(q) for q in meta["quantiles"]]
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
