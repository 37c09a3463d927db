"""From regular series to model windows: time-ordered splits, per-series scaling, lookback -> horizon.

Each series is cut in time order, never shuffled across time:

    | train ........................ | val ........ | test: K rolling origins, `stride` apart |
                                train_end        first origin                                   N

A training window's target ends by `train_end`; a validation window's lies in the val part; the test
origins are the backtest's. Scales come from the train part alone, so nothing after `train_end`
reaches training in any form.

A window at origin t (the first forecast step) holds

    past:   (L, P)  steps t-L .. t-1: scaled target, past and known covariates, calendar, static
    future: (H, F)  steps t .. t+H-1: known covariates, calendar, static, seasonal-naive forecast
    target: (H,)    steps t .. t+H-1: scaled target

Inputs are scaled relative to the last observed value, (y - y[t-1]) / scale, with `scale` the series'
mean absolute one-step change, so series of any level and trend share one model. The target is scaled
relative to a *base* forecast, (y - base) / scale: the naive forecast y[t-1], or, for seasonal data where
it was the better of the two on the training part, the seasonal-naive one. A zero output is the base, and
the model learns a correction to it rather than the level or the seasonal shape from scratch. With a
season of m <= L steps each future step also gets its seasonal-naive value as an input (from the
lookback, so known at t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from dlforge.data.series import SeriesSet
from dlforge.errors import DataError


@dataclass
class Cut:
    """Where one series is cut: the train part ends at `train_end`, the val part at the first test origin."""

    train_end: int
    origins: list[int]  # test origins: the first forecast step of each backtest fold
    horizon: int

    def train_origins(self, lookback: int) -> range:
        return range(lookback, self.train_end - self.horizon + 1)  # targets end by train_end

    def val_origins(self) -> range:
        return range(self.train_end, self.origins[0] - self.horizon + 1)  # targets inside the val part


def cut(n: int, lookback: int, horizon: int, folds: int, stride: int, val_steps: int | None, where: str,
        training: bool = True) -> Cut:
    """The split points of a series of `n` steps; an error naming `where` when it is too short to train on
    (or, with `training` False, to backtest: new data for a trained model)."""
    first = n - horizon - (folds - 1) * stride  # first test origin
    val = val_steps if val_steps is not None else max(2 * horizon, round(0.1 * n))
    train_end = first - val
    if not training and first < lookback:
        raise DataError(f"{where}: {n} steps are too few to backtest: lookback {lookback} + {folds} folds of "
                        f"horizon {horizon}, {stride} apart, need {lookback + horizon + (folds - 1) * stride}")
    if training and train_end - horizon - lookback + 1 < 1:
        raise DataError(f"{where}: {n} steps leave no training window: lookback {lookback} + horizon {horizon} "
                        f"+ validation {val} + backtest {folds} folds x {stride} needs at least "
                        f"{lookback + horizon + val + horizon + (folds - 1) * stride} (lower data.lookback, "
                        "data.horizon, data.val_steps or backtest.folds)")
    return Cut(train_end, [first + k * stride for k in range(folds)], horizon)


def calendar(index: pd.DatetimeIndex, season: int) -> np.ndarray:
    """(N, 4) sine/cosine of the position in the seasonal cycle (two harmonics); (N, 0) without a season.

    Calendar features are known ahead for every future step, so they go in both past and future inputs.
    """
    if season <= 1:
        return np.zeros((len(index), 0))
    if season == 52:
        phase = (index.dayofyear - 1) / 365.25
    elif season in (12, 4):
        phase = (index.month - 1) / 12  # quarters start on months 1, 4, 7, 10: quarterly phase 0, .25, ...
    elif season in (7, 5):
        phase = index.dayofweek / 7
    elif season == 24:
        phase = index.hour / 24
    else:
        phase = np.arange(len(index)) % season / season  # a cycle of steps with no calendar meaning
    angle = 2 * np.pi * np.asarray(phase, dtype=np.float64)
    return np.stack([np.sin(angle), np.cos(angle), np.sin(2 * angle), np.cos(2 * angle)], axis=1)


def fit_encoding(data: SeriesSet, train_end: dict[str, int], lookback: int, horizon: int,
                 use_calendar: bool) -> dict[str, Any]:
    """The JSON-able scaling and encoding of a series set, from each series' train part only."""
    scales, covariates = {}, {}
    columns = [*data.past, *data.known_future]
    errors = np.zeros(2)  # in-sample MAE of the naive and seasonal-naive forecasts, in scaled units
    m = data.season
    for sid, frame in data.frames.items():
        train = frame.iloc[:train_end[sid]]
        y = train[data.target].to_numpy()
        scales[sid], covariates[sid] = series_stats(train, data.target, columns)
        if 1 < m < len(y):
            errors += [np.abs(np.diff(y)).mean() / scales[sid], np.abs(y[m:] - y[:-m]).mean() / scales[sid]]
    enc = {"target": data.target, "past": data.past, "known_future": data.known_future, "freq": data.freq,
           "season": m, "lookback": lookback, "horizon": horizon, "calendar": use_calendar,
           "scales": scales, "covariates": covariates, "static": _static_encoding(data.static)}
    enc["base"] = "seasonal_naive" if seasonal_lag(enc) and errors[1] < errors[0] else "naive"
    return enc


def series_stats(frame: pd.DataFrame, target: str, columns: list[str]) -> tuple[float, list[list[float]]]:
    """A series' target scale and its covariates' [mean, std], from `frame` (its train part, or the history
    of a series the model has not seen)."""
    return change_scale(frame[target].to_numpy()), [[float(frame[c].mean()), _std(frame[c].to_numpy())]
                                                    for c in columns]


def change_scale(y: np.ndarray) -> float:
    """Mean absolute one-step change (1.0 for a constant series): the unit the target is measured in."""
    scale = float(np.mean(np.abs(np.diff(y)))) if len(y) > 1 else 0.0
    return scale if scale > 0 and math.isfinite(scale) else 1.0


def _std(x: np.ndarray) -> float:
    s = float(np.std(x))
    return s if s > 0 and math.isfinite(s) else 1.0


def _static_encoding(static: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Numeric static attributes standardised across series; text ones one-hot over the values seen."""
    columns = next(iter(static.values()), {}).keys()
    encoding = []
    for column in columns:
        values = [attrs[column] for attrs in static.values()]
        numeric = pd.to_numeric(pd.Series(values), errors="coerce")
        if numeric.notna().all():
            encoding.append({"column": column, "kind": "numeric", "mean": float(numeric.mean()),
                             "std": _std(numeric.to_numpy())})
        else:
            encoding.append({"column": column, "kind": "category", "values": sorted(map(str, set(values)))})
    return encoding


def static_vector(attributes: dict[str, Any], encoding: list[dict[str, Any]]) -> np.ndarray:
    """(S,) the encoded static attributes of one series (an unseen category encodes as all zeros)."""
    parts = []
    for e in encoding:
        value = attributes.get(e["column"])
        if e["kind"] == "numeric":
            parts.append([(float(value) - e["mean"]) / e["std"]])
        else:
            parts.append([float(str(value) == v) for v in e["values"]])
    return np.concatenate(parts) if parts else np.zeros(0)


def seasonal_lag(enc: dict[str, Any]) -> bool:
    """Whether future steps get the seasonal-naive value: a season that fits in the lookback."""
    return 1 < enc["season"] <= enc["lookback"]


def feature_sizes(enc: dict[str, Any]) -> tuple[int, int]:
    """(P, F): channels of the past and future inputs."""
    cal = 4 if enc["calendar"] and enc["season"] > 1 else 0
    static = sum(1 if e["kind"] == "numeric" else len(e["values"]) for e in enc["static"])
    known = len(enc["known_future"])
    return 1 + len(enc["past"]) + known + cal + static, known + cal + static + seasonal_lag(enc)


class SeriesArrays:
    """One series encoded once: scaled covariates and calendar for every step, plus its static vector.

    `frame` holds the history and, for forecasting, may run `horizon` steps further with the known
    covariates of the future (its target there is unused).
    """

    def __init__(self, frame: pd.DataFrame, sid: str, attributes: dict[str, Any], enc: dict[str, Any],
                 scale: float | None = None, covariates: list[list[float]] | None = None) -> None:
        self.index = frame.index
        self.y = frame[enc["target"]].to_numpy(np.float64)  # (N,)
        self.scale = scale if scale is not None else enc["scales"][sid]
        stats = np.array(covariates if covariates is not None else enc["covariates"][sid]).reshape(-1, 2)
        past = frame[enc["past"]].to_numpy(np.float64)
        known = frame[enc["known_future"]].to_numpy(np.float64)
        both = np.concatenate([past, known], axis=1)
        both = (both - stats[:, 0]) / stats[:, 1]  # (N, P_cov + K)
        self.past_cov, self.known = both[:, :past.shape[1]], both[:, past.shape[1]:]
        self.calendar = calendar(self.index, enc["season"]) if enc["calendar"] else np.zeros((len(frame), 0))
        self.static = static_vector(attributes, enc["static"])
        self.season = enc["season"] if seasonal_lag(enc) else 0
        self.seasonal_base = enc["base"] == "seasonal_naive"

    def window(self, t: int, lookback: int, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(past (L, P), future (H, F), target (H,), base (H,)) for origin t: scaled inputs, the target scaled
        relative to the base forecast (NaN past the data), and the base in original units."""
        level = self.y[t - 1]
        base = np.full(horizon, level)
        past_y = (self.y[t - lookback:t] - level) / self.scale
        lo, hi = slice(t - lookback, t), slice(t, t + horizon)
        static = np.broadcast_to(self.static, (lookback, len(self.static)))
        past = np.concatenate([past_y[:, None], self.past_cov[lo], self.known[lo], self.calendar[lo], static], 1)
        future = [self.known[hi], self.calendar[hi], static[:horizon]]
        if self.season:  # step t+h's value one season back (several seasons back past the first): y[t - m + h % m]
            m = self.season
            lag = self.y[t - m + np.arange(horizon) % m]  # (H,)
            future.append(((lag - level) / self.scale)[:, None])
            if self.seasonal_base:
                base = lag
        future = np.concatenate(future, 1)
        target = np.full(horizon, np.nan)
        seen = self.y[hi]
        target[:len(seen)] = (seen - base[:len(seen)]) / self.scale
        return past, future, target, base


class WindowDataset(Dataset):
    """Every window of the given origins, as float32 (past, future, target) tensors."""

    def __init__(self, arrays: list[SeriesArrays], origins: list[range], lookback: int, horizon: int) -> None:
        windows = [a.window(t, lookback, horizon) for a, ts in zip(arrays, origins, strict=True) for t in ts]
        self.past = torch.tensor(np.stack([w[0] for w in windows]) if windows else np.zeros((0, 1, 1)),
                                 dtype=torch.float32)  # (N, L, P)
        self.future = torch.tensor(np.stack([w[1] for w in windows]) if windows else np.zeros((0, 1, 0)),
                                   dtype=torch.float32)  # (N, H, F)
        self.target = torch.tensor(np.stack([w[2] for w in windows]) if windows else np.zeros((0, 1)),
                                   dtype=torch.float32)  # (N, H)

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.past[i], self.future[i], self.target[i]
