"""Time-series forecasting: quantiles of the next `horizon` steps from a `lookback` window, per series.

One global model is trained on the windows of every series (`data/windows.py`), with the pinball loss
on each quantile, so P10 / P50 / P90 come out of one forward pass. Evaluation is a rolling-origin
backtest: K origins at the end of every series; at each, the model and the baselines (naive,
seasonal-naive, ETS, ARIMA from statsmodels) forecast from the same history and are scored on the
same truth with the same metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from dlforge.data.series import MissingPolicy, SeriesSet, read_series
from dlforge.data.windows import SeriesArrays, WindowDataset, cut, feature_sizes, fit_encoding, series_stats
from dlforge.errors import DataError, DlforgeError
from dlforge.models import recurrent  # noqa: F401  (registers the forecasters before the spec's default)
from dlforge.pages import Section, figure, table
from dlforge.registry import FORECASTERS, TASKS
from dlforge.run_meta import RunMeta
from dlforge.spec import ModelSpec, SpecBase, StrictModel, resolve_path
from dlforge.tasks.base import Prepared, Task
from dlforge.tasks.capabilities import Explainable, ExplainTarget, Exportable, ForecastsAhead, Profiled, Reported
from dlforge.wire import SeriesWire

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

    from dlforge.run import Run
    from dlforge.tasks.base import Inference

BASELINE_NAMES = ("naive", "seasonal_naive", "ets", "arima")


class ForecastDataSpec(StrictModel):
    source: str = Field(description="builtin:co2 | sunspots | elec_equip | macrodata, or a long .csv/.parquet "
                                    "table (timestamp, series_id, target, covariates); without a series_id "
                                    "column the table is one series")
    timestamp: str = "timestamp"
    series_id: str | None = Field("series_id", description="column naming each series")
    target: str = "target"
    known_future: list[str] = Field(default_factory=list, description="covariates known ahead (promotions, prices)")
    past: list[str] = Field(default_factory=list, description="covariates observed only up to the present")
    static: list[str] = Field(default_factory=list, description="per-series attributes (store type, region)")
    missing: MissingPolicy = Field("interpolate", description="gaps and NaNs: interpolate, ffill or error")
    freq: str | None = Field(None, description="pandas frequency (D, W-SUN, MS, QS, YS); default: inferred")
    lookback: int = Field(ge=2, description="steps of history the model reads")
    horizon: int = Field(ge=1, description="steps ahead the model forecasts")
    calendar: bool = Field(True, description="add the position in the seasonal cycle as known-future inputs")
    val_steps: int | None = Field(None, ge=1, description="steps before the backtest held out for validation "
                                                          "(default: max(2 x horizon, 10% of the series))")

    _source = field_validator("source")(resolve_path)


class ForecasterModelSpec(ModelSpec):
    registry = FORECASTERS
    reserved = ("past_features", "future_features", "horizon", "quantiles", "cell")

    name: str = Field("direct", description="direct (multi-horizon) or encoder_decoder")
    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    quantiles: list[float] = Field([0.1, 0.5, 0.9], description="quantiles forecast (pinball loss); must "
                                                                "hold 0.5 and one on each side of it")

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, qs: list[float]) -> list[float]:
        if any(not 0 < q < 1 for q in qs) or sorted(set(qs)) != qs:
            raise ValueError(f"{qs}: quantiles are distinct, increasing and between 0 and 1")
        if 0.5 not in qs or qs[0] >= 0.5 or qs[-1] <= 0.5:
            raise ValueError(f"{qs}: needs 0.5 (the point forecast) and one quantile on each side (the interval)")
        return qs


class BacktestSpec(StrictModel):
    folds: int = Field(3, ge=1, description="rolling origins at the end of each series")
    stride: int | None = Field(None, ge=1, description="steps between origins (default: the horizon)")
    baselines: list[Literal["naive", "seasonal_naive", "ets", "arima"]] = Field(
        list(BASELINE_NAMES), description="compared on the same folds")


class ForecastingSpec(SpecBase):
    task: Literal["forecasting"] = "forecasting"
    data: ForecastDataSpec
    model: ForecasterModelSpec = ForecasterModelSpec()
    backtest: BacktestSpec = BacktestSpec()

    @model_validator(mode="after")
    def _one_role_per_column(self) -> ForecastingSpec:
        d = self.data
        roles = [d.timestamp, d.target, *d.known_future, *d.past, *d.static, *([d.series_id] if d.series_id else [])]
        repeated = sorted({c for c in roles if roles.count(c) > 1})
        if repeated:
            raise ValueError(f"data: column {repeated[0]!r} has more than one role (timestamp, series_id, target, "
                             "known_future, past, static)")
        return self


@dataclass
class SeriesInput:
    """One series to forecast from: its history (a regular DatetimeIndex; target and covariate columns),
    the known covariates of the steps ahead, and its static attributes."""

    series_id: str
    history: pd.DataFrame
    future: pd.DataFrame | None = None
    static: dict[str, Any] = field(default_factory=dict)


def quantile_name(q: float) -> str:
    """0.1 -> 'p10', 0.025 -> 'p2.5'."""
    return f"p{round(q * 100, 4):g}"


class ForecastingMeta(RunMeta):
    """A forecaster's meta: its cell and quantiles, the series' scaling and encoding, the interval calibration."""

    cell: str
    quantiles: list[float]
    encoding: dict[str, Any] = Field(description="scales and covariate encoding, fit on each series' train part")
    series: int = Field(description="series in the data")
    filled: int = Field(0, description="missing steps filled (data.missing)")
    interval_factors: list[float] | None = Field(None, description="per quantile: the stretch of its distance from "
                                                                   "the median, fit on the validation windows")


@TASKS.register("forecasting")
class Forecasting(Task, Exportable, Explainable, Profiled, Reported, ForecastsAhead):
    wire = SeriesWire()
    spec_class = ForecastingSpec
    meta_class = ForecastingMeta
    default_monitor = "val/loss"
    prediction_options = ("horizon",)
    graph_outputs = ("quantiles",)  # (B, H, Q) in scaled units, before sorting and calibration
    explained_inputs = ("past", "future")  # (B, L, P), (B, H, F): see `feature_names`

    @classmethod
    def example_spec(cls, folder: Path) -> dict[str, Any]:
        """Ten years of monthly sales of two series (folder/sales.csv, with a past, a known-future and a static
        covariate), forecast 6 months ahead by a small LSTM and backtested against the naive baselines."""
        from dlforge.data.examples import monthly_sales, write_csv

        source = write_csv(Path(folder) / "sales.csv", monthly_sales())
        return {"name": "sales-example", "task": "forecasting",
                "data": {"source": str(source), "target": "sales", "past": ["temp"], "known_future": ["promo"],
                         "static": ["region"], "lookback": 24, "horizon": 6, "val_steps": 12},
                "model": {"name": "direct", "cell": "lstm", "kwargs": {"hidden": 16, "layers": 1, "dropout": 0.0}},
                "backtest": {"folds": 2, "baselines": ["naive", "seasonal_naive"]},
                "train": {"epochs": 1, "batch_size": 16, "optimizer": {"lr": 3e-3}, "seed": 0}}

    # ------------------------------------------------------------ data
    def read(self, source: str | None = None) -> SeriesSet:
        d = self.spec.data
        return read_series(source or d.source, timestamp=d.timestamp, series_id=d.series_id, target=d.target,
                           known_future=d.known_future, past=d.past, static=d.static, missing=d.missing,
                           freq=d.freq)


    def future_items(self, meta: dict[str, Any], data: str | None = None, future: str | None = None
                     ) -> list[SeriesInput]:
        series = self.read(data)
        ahead = _future_covariates(future, self.spec.data) if future else {}
        return [SeriesInput(sid, frame, ahead.get(sid, ahead.get("")), series.static[sid])
                for sid, frame in series.frames.items()]
    def cuts(self, data: SeriesSet, source: str | None = None) -> dict[str, Any]:
        """Each series' split points; new data (`source`) needs only its backtest folds."""
        d, b = self.spec.data, self.spec.backtest
        return {sid: cut(len(frame), d.lookback, d.horizon, b.folds, b.stride or d.horizon, d.val_steps,
                         f"{source or d.source}: series {sid!r}", training=source is None)
                for sid, frame in data.frames.items()}

    def prepare(self) -> Prepared:
        d, m = self.spec.data, self.spec.model
        data = self.read()
        cuts = self.cuts(data)
        enc = fit_encoding(data, {sid: c.train_end for sid, c in cuts.items()}, d.lookback, d.horizon, d.calendar)
        arrays = [SeriesArrays(frame, sid, data.static[sid], enc) for sid, frame in data.frames.items()]
        train = WindowDataset(arrays, [c.train_origins(d.lookback) for c in cuts.values()], d.lookback, d.horizon)
        val = WindowDataset(arrays, [c.val_origins() for c in cuts.values()], d.lookback, d.horizon)
        meta = {"model": m.name, "cell": m.cell, "model_kwargs": m.kwargs, "quantiles": m.quantiles,
                "encoding": enc, "series": len(data),
                "sizes": {"train": len(train), "val": len(val), "test": len(data) * self.spec.backtest.folds},
                "filled": sum(data.filled.values())}
        model = self.build_model(meta)
        if m.pretrained is not None:
            from dlforge.models.pretrained import load_pretrained

            meta["pretrained"] = load_pretrained(model, m.pretrained, [])
        return Prepared(model, train, val, self.backtest_items(data, cuts), meta)

    def backtest_items(self, data: SeriesSet, cuts: dict[str, Any]) -> tuple[list[SeriesInput], list[np.ndarray]]:
        """(inputs, truths) of every fold: the history up to the origin, the next `horizon` true values."""
        h = self.spec.data.horizon
        items, truths = [], []
        for sid, frame in data.frames.items():
            for t in cuts[sid].origins:
                items.append(SeriesInput(sid, frame.iloc[:t], frame.iloc[t:t + h], data.static[sid]))
                truths.append(frame[data.target].to_numpy()[t:t + h])
        return items, truths

    def evaluation_data(self, meta: dict[str, Any], source: str | None = None) -> tuple[Sequence[Any], Any]:
        data = self.read(source)
        return self.backtest_items(data, self.cuts(data, source))

    def profile_items(self, items: Sequence[Any], meta: dict[str, Any]) -> list[SeriesInput]:
        """Drift compares time-series values as the model reads them: every `lookback` window (with the known
        future after it) of the longest history of each series."""
        enc = meta["encoding"]
        lookback, horizon = enc["lookback"], enc["horizon"]
        longest: dict[str, SeriesInput] = {}
        for item in (as_series_input(x, enc) for x in items):
            kept = longest.get(item.series_id)
            if kept is None or len(item.history) > len(kept.history):
                longest[item.series_id] = item
        windows = []
        for item in longest.values():
            frame = item.history if item.future is None else pd.concat([item.history, item.future])
            for t in range(lookback, len(frame) - horizon + 1):
                windows.append(SeriesInput(item.series_id, frame.iloc[t - lookback:t], frame.iloc[t:t + horizon],
                                           item.static))
        return windows

    # ------------------------------------------------------------ model, loss, step
    def build_model(self, meta: dict[str, Any]) -> nn.Module:
        enc = meta["encoding"]
        past, future = feature_sizes(enc)
        return ForecasterModelSpec.build(meta["model"], meta["model_kwargs"], past_features=past,
                                         future_features=future, horizon=enc["horizon"],
                                         quantiles=meta["quantiles"], cell=meta["cell"])

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return pinball_loss(outputs.float(), targets, self.spec.model.quantiles)

    def metrics(self, meta: dict[str, Any]) -> MetricCollection:
        from torchmetrics import MeanAbsoluteError, MetricCollection

        return MetricCollection({"mae": MeanAbsoluteError()})  # of the median, in units of the mean step change

    def step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        past, future, target = batch  # (B, L, P), (B, H, F), (B, H)
        outputs = model(past, future, target)  # (B, H, Q); the target only feeds teacher forcing
        median = self.spec.model.quantiles.index(0.5)
        return self.loss(outputs, target), outputs[..., median].float(), target

    @torch.no_grad()
    def calibrate(self, model: nn.Module, val: WindowDataset, meta: dict[str, Any]) -> dict[str, Any]:
        """Interval widths from the validation windows (conformalised quantiles, after Romano et al., 2019).

        A model fit on a few hundred windows is overconfident out of sample. For each quantile tau, the
        factor c stretches its distance from the median, med + c (q - med), so that a share tau of the
        validation truths falls below it; multiplying keeps the interval's growth over the horizon.
        Factors only widen (c >= 1): the validation windows overlap, so they are fewer independent cases
        than they look, and narrowing on them is a bet. On co2 it lost: shrunk to 0.6x on 1994-98, the
        P10-P90 band covered 59% of 1998-2001 (El Nino years) against 77% left alone.
        """
        if not len(val):
            return {}
        model.eval()
        device = next(model.parameters()).device
        out = model(val.past.to(device), val.future.to(device)).double().cpu().sort(dim=-1).values  # (N, H, Q)
        qs = meta["quantiles"]
        median = out[..., qs.index(0.5)]  # (N, H)
        factors = []
        for i, q in enumerate(qs):
            spread = out[..., i] - median  # (N, H): negative below the median
            ratio = (val.target.double() - median) / torch.where(spread.abs() < 1e-6, 1e-6, spread.abs())
            # below the median: P(y <= med - c|spread|) = q  <=>  c = the (1 - q)-quantile of -ratio
            c = 1.0 if q == 0.5 else float(torch.quantile(ratio if q > 0.5 else -ratio, max(q, 1 - q)))
            factors.append(max(c, 1.0))
        return {"interval_factors": factors}

    # ------------------------------------------------------------ inference
    def preprocess(self, items: Sequence[Any], meta: dict[str, Any]) -> dict[str, Any]:
        enc = meta["encoding"]
        lookback, horizon = enc["lookback"], enc["horizon"]
        windows, starts, ids = [], [], []
        for item in items:
            x = as_series_input(item, enc)
            frame = _with_future(x, enc)  # the last `lookback` steps, then `horizon` future steps
            scale, covariates = None, None  # a series seen in training keeps its training statistics
            if x.series_id not in enc["scales"]:
                scale, covariates = series_stats(x.history, enc["target"], [*enc["past"], *enc["known_future"]])
            arrays = SeriesArrays(frame, x.series_id, x.static, enc, scale=scale, covariates=covariates)
            past, future, _, base = arrays.window(lookback, lookback, horizon)
            windows.append((past, future, base, arrays.scale))
            starts.append(frame.index[lookback].isoformat())
            ids.append(x.series_id)
        return {"past": torch.tensor(np.stack([w[0] for w in windows]), dtype=torch.float32),  # (B, L, P)
                "future": torch.tensor(np.stack([w[1] for w in windows]), dtype=torch.float32),  # (B, H, F)
                "base": torch.tensor(np.stack([w[2] for w in windows]), dtype=torch.float64),  # (B, H)
                "scale": torch.tensor([w[3] for w in windows], dtype=torch.float64),  # (B,)
                "series_id": ids, "start": starts}

    def example_inputs(self, meta: dict[str, Any], batch: int = 2) -> dict[str, torch.Tensor]:
        inputs = self.preprocess(synthetic_series(meta["encoding"], batch), meta)
        return {"past": inputs["past"], "future": inputs["future"]}

    def forward(self, graph: nn.Module, inputs: dict[str, Any], meta: dict[str, Any], **options: Any
                ) -> list[dict[str, Any]]:
        scaled = graph(inputs["past"], inputs["future"]).double().sort(dim=-1).values  # (B, H, Q): never cross
        if "interval_factors" in meta:  # calibrated on the validation windows
            median = scaled[..., meta["quantiles"].index(0.5), None]  # (B, H, 1)
            factors = torch.tensor(meta["interval_factors"], dtype=scaled.dtype, device=scaled.device)
            scaled = median + factors * (scaled - median)
        values = scaled * inputs["scale"][:, None, None] + inputs["base"][..., None]  # original units
        return [{"series_id": sid, "start": start, "quantiles": q}
                for sid, start, q in zip(inputs["series_id"], inputs["start"], values, strict=True)]

    def postprocess(self, outputs: list[dict[str, Any]], meta: dict[str, Any], **options: Any
                    ) -> list[dict[str, Any]]:
        enc = meta["encoding"]
        horizon = options.get("horizon") or enc["horizon"]
        if not isinstance(horizon, int) or not 1 <= horizon <= enc["horizon"]:
            raise DlforgeError(f"horizon: {horizon!r}: this model forecasts 1 to {enc['horizon']} steps "
                               "(train with a larger data.horizon for more)")
        names = [quantile_name(q) for q in meta["quantiles"]]
        results = []
        for out in outputs:
            q = out["quantiles"][:horizon].numpy()  # (H, Q)
            stamps = pd.date_range(out["start"], periods=horizon, freq=enc["freq"])
            results.append({"series_id": out["series_id"], "timestamps": [s.isoformat() for s in stamps],
                            **{name: q[:, i].tolist() for i, name in enumerate(names)}})
        return results

    def explain_target(self, outputs: list[dict[str, Any]], meta: dict[str, Any], target: str | None = None,
                       box: int | None = None, **options: Any) -> ExplainTarget:
        """The forecast of one quantile (`target`, default the median) summed over the horizon, in the series' units."""
        names = [quantile_name(q) for q in meta["quantiles"]]
        if box is not None or (target is not None and target not in names):
            raise DlforgeError(f"target {target!r}: a forecast explains one of its quantiles: {', '.join(names)}")
        i = names.index(target or quantile_name(0.5))
        return ExplainTarget({"quantile": names[i], "score": f"sum of the {names[i]} forecast over "
                              f"{meta['encoding']['horizon']} steps"},
                             lambda out: torch.stack([o["quantiles"][:, i].sum() for o in out]))

    def feature_names(self, meta: dict[str, Any]) -> dict[str, list[str]]:
        """The channels of the past and future windows, in `SeriesArrays.window`'s order."""
        enc = meta["encoding"]
        calendar = ["season sin", "season cos", "season sin 2", "season cos 2"] \
            if enc["calendar"] and enc["season"] > 1 else []
        static = [e["column"] if e["kind"] == "numeric" else f"{e['column']}={v}" for e in enc["static"]
                  for v in ([None] if e["kind"] == "numeric" else e["values"])]
        lag = ["seasonal-naive value"] if 1 < enc["season"] <= enc["lookback"] else []
        return {"past": [enc["target"], *enc["past"], *enc["known_future"], *calendar, *static],
                "future": [*enc["known_future"], *calendar, *static, *lag]}

    # ------------------------------------------------------------ evaluation and report
    def evaluate(self, predictor: Inference, items: Sequence[Any], targets: Any, plots_dir: Path) -> dict[str, Any]:
        from dlforge.forecast.backtest import backtest

        meta = predictor.meta
        return backtest(items, targets, predictor.outputs(items), meta["encoding"], meta["quantiles"],
                        f"{meta['model']} ({meta['cell']})", list(self.spec.backtest.baselines),
                        self.spec.backtest.folds, plots_dir)

    def report_sections(self, run: Run) -> list[Section]:
        ev = run.read_eval()
        if ev is None or "comparison" not in ev:
            return []
        metrics = list(ev["metrics"])
        rows = []
        for m, scores in ev["comparison"].items():
            rows.append([m, f"{ev['fitted'][m]}/{ev['n']}", *(f"{scores[k]:.4f}" for k in metrics)])
        compare = table(["method", "forecasts", *metrics], rows)
        methods = list(ev["comparison"])
        per_series = table(["series", *(f"MASE {m}" for m in methods)],
                           [[sid, *(f"{s[m].get('mase', float('nan')):.3f}" for m in methods)]
                            for sid, s in list(ev["per_series"].items())[:50]])
        lo, hi = ev["interval"]
        body = (f"<p>Rolling-origin backtest: {ev['folds']} origins per series, horizon {ev['horizon']}, "
                f"{ev['n']} forecasts ({ev['data']}). Coverage: share of the truth inside "
                f"[{quantile_name(lo)}, {quantile_name(hi)}] (nominal {hi - lo:.0%}). MASE below 1 beats the "
                "in-sample seasonal-naive forecast.</p>" + compare + per_series
                + figure(run.path / "plots" / "backtest.png", "Backtest: truth (black), the model's median and "
                         "interval per fold, seasonal-naive and ETS medians (dashed)"))
        return [Section("Forecasting", body)]


def pinball_loss(outputs: torch.Tensor, target: torch.Tensor, quantiles: Sequence[float]) -> torch.Tensor:
    """Mean pinball loss: outputs (B, H, Q), target (B, H). Minimised by the true quantiles."""
    tau = torch.tensor(quantiles, dtype=outputs.dtype, device=outputs.device)  # (Q,)
    error = target.unsqueeze(-1) - outputs  # (B, H, Q)
    return torch.maximum(tau * error, (tau - 1) * error).mean()


def as_series_input(item: Any, enc: dict[str, Any]) -> SeriesInput:
    """A SeriesInput from what users pass: a SeriesInput, a dict of its fields, a pandas Series or DataFrame
    (DatetimeIndex) of one series' history."""
    if isinstance(item, SeriesInput):
        x = item
    elif isinstance(item, dict):
        unknown = set(item) - {"series_id", "history", "future", "static"}
        if unknown or "history" not in item:
            raise DlforgeError(f"a series to forecast has keys series_id, history, future, static; got {sorted(item)}")
        x = SeriesInput(str(item.get("series_id", "series")), item["history"], item.get("future"),
                        dict(item.get("static") or {}))
    elif isinstance(item, pd.Series):
        x = SeriesInput(str(item.name or "series"), item.to_frame(enc["target"]))
    elif isinstance(item, pd.DataFrame):
        x = SeriesInput("series", item)
    elif isinstance(item, str | Path):
        raise DlforgeError(f"{item}: to forecast from a file, run dlforge forecast RUN --data {item}")
    else:
        raise DlforgeError(f"cannot forecast from a {type(item).__name__}: give a pandas Series or DataFrame with "
                           "a DatetimeIndex, or a dict with series_id and history")
    where = f"series {x.series_id!r}"
    history = x.history
    if isinstance(history, pd.Series):
        history = history.to_frame(enc["target"])
    if not isinstance(history.index, pd.DatetimeIndex):
        raise DataError(f"{where}: the history needs a DatetimeIndex")
    needed = [enc["target"], *enc["past"], *enc["known_future"]]
    missing = [c for c in needed if c not in history.columns]
    if missing:
        raise DataError(f"{where}: the history has no column {missing[0]!r}; it needs {', '.join(needed)}")
    if len(history) < enc["lookback"]:
        raise DataError(f"{where}: {len(history)} steps of history; the model reads the last {enc['lookback']}")
    tail = history.iloc[-enc["lookback"]:]
    expected = pd.date_range(end=tail.index[-1], periods=len(tail), freq=enc["freq"])
    if not tail.index.equals(expected):
        raise DataError(f"{where}: the last {enc['lookback']} timestamps are not consecutive {enc['freq']} steps")
    if tail[needed].isna().any().any():
        raise DataError(f"{where}: NaN in the last {enc['lookback']} steps of the history")
    x.history = history
    return x


def synthetic_series(enc: dict[str, Any], count: int) -> list[SeriesInput]:
    """`count` random series shaped as the model reads them (columns, frequency, static attributes, the known
    covariates ahead), under ids training never saw: inputs to trace and check an export with."""
    rng = np.random.default_rng(count)
    index = pd.date_range("2000-01-01", periods=enc["lookback"] + enc["horizon"], freq=enc["freq"])
    past, ahead = index[:enc["lookback"]], index[enc["lookback"]:]
    columns = [enc["target"], *enc["past"], *enc["known_future"]]
    static = {e["column"]: e["mean"] if e["kind"] == "numeric" else e["values"][0] for e in enc["static"]}
    return [SeriesInput(f"example-{i}", pd.DataFrame(rng.normal(10, 2, (len(past), len(columns))), past, columns),
                        pd.DataFrame(rng.normal(0, 1, (len(ahead), len(enc["known_future"]))), ahead,
                                     enc["known_future"]), static)
            for i in range(count)]


def _with_future(x: SeriesInput, enc: dict[str, Any]) -> pd.DataFrame:
    """The history's last `lookback` rows, then `horizon` rows of the future (known covariates, NaN target)."""
    horizon, known = enc["horizon"], enc["known_future"]
    index = pd.date_range(x.history.index[-1], periods=horizon + 1, freq=enc["freq"])[1:]
    future = pd.DataFrame(np.nan, index=index, columns=x.history.columns)
    if known:
        given = x.future
        if given is None or any(c not in given.columns for c in known):
            raise DataError(f"series {x.series_id!r}: the model uses known-future covariates "
                            f"({', '.join(known)}); give their values for the next {horizon} steps")
        future[known] = given[known].reindex(index).to_numpy()  # matched by timestamp
        holes = future[known].isna().any(axis=1)
        if holes.any():
            raise DataError(f"series {x.series_id!r}: no value of {', '.join(known)} for "
                            f"{holes.idxmax().date()} ({int(holes.sum())} of the next {horizon} steps missing)")
    return pd.concat([x.history.iloc[-enc["lookback"]:], future])


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
