"""`dlforge forecast`: a finished forecasting run's quantile forecasts past the end of the data.

The verb is registered here (`dlforge.registry.COMMANDS`), beside what it does; `dlforge.cli` adds it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from dlforge._io import atomic_write, atomic_write_json
from dlforge.predictor import Predictor
from dlforge.registry import COMMANDS
from dlforge.run import Run, resolve_run
from dlforge.tasks.capabilities import ForecastsAhead


@COMMANDS.register("forecast")
def forecast_command(
        run: Annotated[Path, typer.Argument(help="a run directory, `latest` or the start of a run's name",
                                            show_default=False)],
        horizon: Annotated[int | None, typer.Option(help="steps ahead (default: the model's horizon)")] = None,
        data: Annotated[str | None, typer.Option(help="newer history to forecast from (default: the run's data)")
                        ] = None,
        future: Annotated[str | None, typer.Option(help="known-future covariates of the steps ahead "
                                                        "(.csv/.parquet)")] = None,
        out_dir: Annotated[Path | None, typer.Option("--out", help="where forecast.json/.csv/.png go")] = None,
        device: str = "cpu") -> None:
    """Forecast past the end of the data, with intervals: JSON, CSV and a PNG."""
    forecasts, where = forecast_run(resolve_run(run), horizon, data, future, out_dir, device)
    table = Table(title=f"{len(forecasts)} series forecast {len(forecasts[0]['timestamps'])} steps ahead")
    names = [k for k in forecasts[0] if k.startswith("p")]
    for col in ("series", "last step", *(f"{n} (last step)" for n in names)):
        table.add_column(col, justify="left" if col == "series" else "right")
    for f in forecasts[:20]:
        table.add_row(f["series_id"], f["timestamps"][-1][:19], *(f"{f[n][-1]:.4g}" for n in names))
    out = Console()
    out.print(table)
    for name in ("forecast.json", "forecast.csv", "forecast.png"):
        out.print(f"wrote {where / name}")


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
