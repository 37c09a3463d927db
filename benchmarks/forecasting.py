"""Forecasting quality on the four built-in series: the LSTM against naive, seasonal-naive, ETS and ARIMA.

Each series trains one model through `dlforge.train`; its rolling-origin backtest (the last `folds`
origins, `horizon` apart, never seen in training or validation) scores the model and the statsmodels
baselines on the same folds with the same metrics. MASE is scaled by the in-sample seasonal-naive error
(M4's definition), so below 1 beats that forecast on its own history.

Targets: the LSTM beats seasonal-naive on every series and ETS on at least half; its P10-P90 interval
covers 70-90% of the truth (pooled over all series and folds).

    uv run python benchmarks/forecasting.py [--series co2 sunspots] [--epochs N]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

import dlforge
from dlforge.spec import validate_spec

RECIPES = {
    # weekly, 2284 weeks: one year ahead from three years back, four yearly origins
    "co2": {"lookback": 156, "horizon": 52, "folds": 4, "epochs": 30, "lr": 2e-3, "kwargs": {"hidden": 64}},
    # yearly, 309 years: a decade ahead from four cycles back
    "sunspots": {"lookback": 44, "horizon": 10, "folds": 3, "epochs": 60, "lr": 3e-3, "kwargs": {"hidden": 64}},
    # monthly, 257 months: a year ahead from four years back
    "elec_equip": {"lookback": 48, "horizon": 12, "folds": 3, "epochs": 60, "lr": 3e-3, "kwargs": {"hidden": 64}},
    # quarterly, 203 quarters: two years ahead from eight back, with 4 past covariates
    "macrodata": {"lookback": 32, "horizon": 8, "folds": 3, "epochs": 60, "lr": 3e-3, "kwargs": {"hidden": 64}},
}
METHODS = ("naive", "seasonal_naive", "ets", "arima")


def spec_for(series: str, lookback: int, horizon: int, folds: int, epochs: int, lr: float, kwargs: dict,
             model: str, cell: str) -> dict:
    return {
        "name": f"bench-{series}",
        "task": "forecasting",
        "data": {"source": f"builtin:{series}", "lookback": lookback, "horizon": horizon},
        "model": {"name": model, "cell": cell, "kwargs": kwargs},
        "backtest": {"folds": folds},
        "train": {"epochs": epochs, "batch_size": 32, "seed": 0, "optimizer": {"name": "adamw", "lr": lr},
                  "grad_clip": 1.0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", nargs="+", default=list(RECIPES))
    parser.add_argument("--model", default="direct")
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    args = parser.parse_args()
    console = Console(width=150)
    table = Table(title=f"held-out backtest folds; {args.model} ({args.cell}); {torch.get_num_threads()} CPU threads")
    for col in ("series", "H x folds", "train s", "method", "MASE", "sMAPE", "RMSE", "P10-P90 coverage", "pinball"):
        table.add_column(col, justify="left" if col in ("series", "method") else "right")
    verdicts, covered = [], []
    with tempfile.TemporaryDirectory() as runs:
        for series in args.series:
            recipe = {**RECIPES[series], **({"epochs": args.epochs} if args.epochs else {})}
            started = time.perf_counter()
            run = dlforge.train(validate_spec(spec_for(series, model=args.model, cell=args.cell, **recipe)),
                                runs_dir=runs, progress=False)
            train_s = sum(row["time_s"] for row in run.read_metrics())
            ev = run.read_eval()
            model = ev["model"]
            for i, (method, s) in enumerate(ev["comparison"].items()):
                if not s:
                    table.add_row(series if i == 0 else "", "", "", method, *["n/a"] * 5)
                    continue
                table.add_row(series if i == 0 else "", f"{recipe['horizon']} x {recipe['folds']}" if i == 0 else "",
                              f"{train_s:.0f}" if i == 0 else "", method, f"{s['mase']:.3f}", f"{s['smape']:.2f}",
                              f"{s['rmse']:.3g}", f"{s['coverage']:.2f}", f"{s['pinball']:.3g}",
                              style="bold" if method == model else None)
            table.add_section()
            mine, comp = ev["comparison"][model], ev["comparison"]
            covered.append((mine["coverage"], ev["n"] * recipe["horizon"]))
            verdicts.append((series, mine["mase"] < comp["seasonal_naive"]["mase"],
                             bool(comp["ets"]) and mine["mase"] < comp["ets"]["mase"]))
            console.log(f"{series}: done in {time.perf_counter() - started:.0f} s")
    console.print(table)
    beats_snaive = all(v[1] for v in verdicts)
    beats_ets = sum(v[2] for v in verdicts)
    coverage = sum(c * n for c, n in covered) / sum(n for _, n in covered)
    console.print(f"beats seasonal-naive on {sum(v[1] for v in verdicts)}/{len(verdicts)} series: "
                  f"{'PASS' if beats_snaive else 'FAIL'}")
    console.print(f"beats ETS on {beats_ets}/{len(verdicts)} series (target >= half): "
                  f"{'PASS' if 2 * beats_ets >= len(verdicts) else 'FAIL'}")
    console.print(f"P10-P90 coverage pooled: {coverage:.3f} (target 0.70-0.90): "
                  f"{'PASS' if 0.70 <= coverage <= 0.90 else 'FAIL'}")


if __name__ == "__main__":
    main()
