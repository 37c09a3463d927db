"""Forecasting: time-ordered windows that never see the future, models that learn, the backtest against
the baselines, and `dlforge train / evaluate / forecast` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import dlforge
from dlforge.data.examples import monthly_sales
from dlforge.data.windows import change_scale, cut
from dlforge.registry import FORECASTERS, TASKS
from dlforge.spec import validate_spec
from tests.conftest import cli, fit_on_training_set, with_overrides, write_spec

MARK = 1e9  # a value no honest window of the past can hold


def monthly_table(n: int = 120, ids: tuple[str, ...] = ("a", "b"), seed: int = 0) -> pd.DataFrame:
    """Long table: a seasonal series per id with a trend, a past covariate, a known-future promotion and a
    static region (the forecasting example's data)."""
    return monthly_sales(n, ids, seed)


def spec(source: Path | str, **over: object) -> dict:
    s = {"name": "fc", "task": "forecasting",
         "data": {"source": str(source), "target": "sales", "past": ["temp"], "known_future": ["promo"],
                  "static": ["region"], "lookback": 24, "horizon": 6, "val_steps": 12},
         "model": {"name": "direct", "cell": "lstm", "kwargs": {"hidden": 16, "layers": 1, "dropout": 0.0}},
         "backtest": {"folds": 2, "baselines": ["naive", "seasonal_naive"]},
         "train": {"epochs": 3, "batch_size": 16, "optimizer": {"lr": 3e-3}, "seed": 0}}
    return with_overrides(s, over)


def test_windows_never_see_the_future(tmp_path: Path) -> None:
    """Every value from the validation part on is replaced by MARK: no training window (inputs or targets),
    and no scale, may hold it; validation targets and test truths must (so the check is not vacuous)."""
    table = monthly_table()
    n, lookback, horizon, folds = 120, 24, 6, 2
    c = cut(n, lookback, horizon, folds, horizon, 12, "x")
    assert c.train_end == n - horizon - (folds - 1) * horizon - 12 == 96
    clean = {sid: rows["sales"].to_numpy()[:c.train_end] for sid, rows in table.groupby("series_id")}
    position = table.groupby("series_id").cumcount().to_numpy()
    table.loc[position >= c.train_end, ["sales", "temp"]] = MARK
    table.to_csv(tmp_path / "marked.csv", index=False)

    task = TASKS.get("forecasting")(validate_spec(spec(tmp_path / "marked.csv")))
    prepared = task.prepare()
    train = prepared.train
    assert len(train) == 2 * (c.train_end - horizon - lookback + 1)
    assert train.past.abs().max() < 1e3 and train.target.abs().max() < 1e3 and train.future.abs().max() < 1e3
    enc = prepared.meta["encoding"]
    for sid, values in clean.items():
        assert enc["scales"][sid] == pytest.approx(change_scale(values))
        assert enc["covariates"][sid][0][0] < 1e3  # temp's mean from the train part only
    assert prepared.val.target.abs().max() > 1e6  # the validation part is the marked one
    items, truths = prepared.test
    assert len(items) == 2 * folds
    for item, truth in zip(items, truths, strict=True):
        frame = table[table.series_id == item.series_id]
        origin = len(item.history)
        assert origin in c.origins
        # the history stops right before the truth, which is the next `horizon` values of the series
        np.testing.assert_array_equal(truth, frame["sales"].to_numpy()[origin:origin + horizon])
        assert pd.Timestamp(item.future.index[0]) > item.history.index[-1]


@pytest.mark.parametrize("name", FORECASTERS.names())
def test_tiny_model_overfits_a_sine_wave(tmp_path: Path, name: str) -> None:
    """A 16-unit LSTM of each forecaster learns a noiseless sine wave: the median's error on its own
    training windows falls from about 4.5 mean step changes (the wave's amplitude is 4) to under 0.1."""
    t = np.arange(300)
    pd.DataFrame({"timestamp": pd.date_range("2000-01-01", periods=300, freq="D"),
                  "target": np.sin(2 * np.pi * t / 25)}).to_csv(tmp_path / "sine.csv", index=False)
    s = {"name": "sine", "task": "forecasting",
         "data": {"source": str(tmp_path / "sine.csv"), "series_id": None, "lookback": 30, "horizon": 10,
                  "calendar": False},
         "model": {"name": name, "kwargs": {"hidden": 16, "layers": 1, "dropout": 0.0}},
         "backtest": {"folds": 1, "baselines": []},
         "train": {"epochs": 40, "batch_size": 8, "optimizer": {"lr": 1e-2}, "seed": 0, "grad_clip": 1.0}}
    history = fit_on_training_set(s)
    assert history[0]["val/mae"] > 3
    assert history[-1]["val/mae"] < 0.1, [round(r["val/mae"], 3) for r in history]


def test_teacher_forcing_in_one_call_equals_feeding_the_truth_step_by_step() -> None:
    torch.manual_seed(0)
    model = FORECASTERS.get("encoder_decoder")(past_features=3, future_features=2, horizon=5,
                                               quantiles=[0.1, 0.5, 0.9], cell="gru", hidden=8, layers=2,
                                               dropout=0.0, teacher_forcing=1.0).train()
    past, future, target = torch.randn(4, 7, 3), torch.randn(4, 5, 2), torch.randn(4, 5)
    fast = model(past, future, target)
    _, state = model.encoder(past)
    previous, steps = past[:, -1:, :1], []
    for h in range(5):
        out, state = model.decoder(torch.cat([previous, future[:, h:h + 1]], 2), state)
        steps.append(model.head(out))
        previous = target[:, h:h + 1, None]
    torch.testing.assert_close(fast, torch.cat(steps, 1))


def test_forecast_bad_history_is_named() -> None:
    from dlforge.tasks.forecasting import as_series_input

    enc = {"target": "y", "past": [], "known_future": [], "lookback": 5, "freq": "D"}
    short = pd.Series([1.0, 2.0], index=pd.date_range("2020-01-01", periods=2, freq="D"), name="shop-7")
    with pytest.raises(dlforge.DataError, match="series 'shop-7': 2 steps of history; the model reads the last 5"):
        as_series_input(short, enc)
    gappy = pd.Series(np.arange(6.0), index=pd.to_datetime(["2020-01-0" + str(d) for d in (1, 2, 3, 5, 6, 7)]),
                      name="s")
    with pytest.raises(dlforge.DataError, match="not consecutive D steps"):
        as_series_input(gappy, enc)


def test_train_evaluate_forecast_end_to_end(tmp_path: Path) -> None:
    """Two series with a past covariate, a known-future promotion and a static region: train, backtest against
    the baselines, forecast past the end with the promotions of the next steps, and the report."""
    monthly_table().to_csv(tmp_path / "sales.csv", index=False)
    spec_file = write_spec(tmp_path / "spec.yaml", spec("sales.csv"))
    cli("train", spec_file, "--runs-dir", tmp_path / "runs", check=True)
    run_dir = next((tmp_path / "runs").iterdir())
    ev = json.loads((run_dir / "eval.json").read_text())
    assert set(ev["comparison"]) == {"direct (lstm)", "naive", "seasonal_naive"}
    assert ev["n"] == 4 and ev["fitted"]["naive"] == 4
    for scores in ev["comparison"].values():
        assert set(scores) == {"mase", "smape", "mae", "rmse", "coverage", "pinball"}
    assert ev["headline"] == {"name": "mase", "value": ev["comparison"]["direct (lstm)"]["mase"]}
    assert (run_dir / "plots" / "backtest.png").stat().st_size > 10_000
    assert "Forecasting" in (run_dir / "report.html").read_text()

    # the promotions of the next 6 months; without them the forecast is refused
    future = pd.DataFrame([{"timestamp": s.date().isoformat(), "series_id": sid, "promo": 0.0}
                           for sid in ("a", "b") for s in pd.date_range("2020-01-01", periods=6, freq="MS")])
    future.to_csv(tmp_path / "future.csv", index=False)
    refused = cli("forecast", run_dir, "--horizon", "4")
    assert refused.returncode == 2 and "known-future covariates (promo)" in refused.stderr
    done = cli("forecast", run_dir, "--horizon", "4", "--future", tmp_path / "future.csv", "--out", tmp_path / "fc",
               check=True)
    assert "wrote" in done.stdout
    forecasts = json.loads((tmp_path / "fc" / "forecast.json").read_text())
    assert [f["series_id"] for f in forecasts] == ["a", "b"]
    for f in forecasts:
        assert f["timestamps"] == [f"2020-0{m}-01T00:00:00" for m in (1, 2, 3, 4)]  # the data ends 2019-12
        assert np.all(np.diff([f["p10"], f["p50"], f["p90"]], axis=0) >= 0)  # quantiles never cross
    rows = pd.read_csv(tmp_path / "fc" / "forecast.csv")
    assert list(rows.columns) == ["series_id", "timestamp", "p10", "p50", "p90"] and len(rows) == 8
    assert (tmp_path / "fc" / "forecast.png").stat().st_size > 10_000
    too_far = cli("forecast", run_dir, "--horizon", "7", "--future", tmp_path / "future.csv")
    assert too_far.returncode == 2 and "forecasts 1 to 6 steps" in too_far.stderr

    evaluated = cli("evaluate", run_dir, check=True)
    assert "seasonal_naive" in evaluated.stdout and "mase" in evaluated.stdout
    # newer, shorter history (50 months): enough to backtest, and to forecast from with its own promotions
    monthly_table(n=50, seed=1).to_csv(tmp_path / "newer.csv", index=False)
    cli("evaluate", run_dir, "--data", tmp_path / "newer.csv", check=True)
    assert json.loads((run_dir / "evaluations" / "newer" / "eval.json").read_text())["n"] == 4
    late = cli("forecast", run_dir, "--data", tmp_path / "newer.csv", "--future", tmp_path / "future.csv")
    assert late.returncode == 2 and "no value of promo for 2014-03-01" in late.stderr  # future.csv starts 2020
    wrong = cli("predict", run_dir, tmp_path / "newer.csv")
    assert wrong.returncode == 2 and "dlforge forecast RUN --data" in wrong.stderr

    # a shorter horizon is the start of the full forecast
    predictor = dlforge.load(run_dir)
    items, _ = predictor.evaluation_data()
    full, short = predictor.predict(items[:1]), predictor.predict(items[:1], horizon=2)
    assert short[0]["p50"] == full[0]["p50"][:2]


def test_bad_series_data_fails_with_the_line(tmp_path: Path) -> None:
    table = monthly_table()
    table.loc[5, "timestamp"] = table.loc[4, "timestamp"]  # series a repeats a month on CSV line 7
    table.to_csv(tmp_path / "dup.csv", index=False)
    proc = cli("train", write_spec(tmp_path / "dup.yaml", spec("dup.csv")), "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2
    assert "dup.csv:7: series 'a': timestamp 2010-05-01 repeats" in proc.stderr

    gap = monthly_table().drop(index=10)
    gap.to_csv(tmp_path / "gap.csv", index=False)
    proc = cli("train", write_spec(tmp_path / "gap.yaml", spec("gap.csv", data={"missing": "error"})),
               "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2
    assert "gap.csv: series 'a': 3 missing value(s), the first at 2010-11-01" in proc.stderr  # sales, temp, promo
    assert not list((tmp_path / "runs").glob("*/COMPLETE"))

    short = spec("gap.csv", data={"lookback": 100})
    proc = cli("train", write_spec(tmp_path / "short.yaml", short), "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2 and "leave no training window" in proc.stderr


def test_spec_checks_quantiles_and_roles() -> None:
    with pytest.raises(dlforge.SpecError, match=r"needs 0\.5"):
        validate_spec(spec("x.csv", model={"quantiles": [0.1, 0.9]}))
    with pytest.raises(dlforge.SpecError, match="column 'temp' has more than one role"):
        validate_spec(spec("x.csv", data={"known_future": ["temp"]}))


def test_calibration_widens_overconfident_quantiles_to_their_share(tmp_path: Path) -> None:
    """`calibrate` stretches each quantile until a share tau of the validation targets lies below it (up to
    the ties of a finite sample), and never narrows one: a model made 5x overconfident gets its shares
    back; one made 5x timid keeps its (conservative) width."""
    from dlforge.training.trainer import Trainer

    monthly_table(n=160).to_csv(tmp_path / "sales.csv", index=False)
    s = spec(tmp_path / "sales.csv", data={"val_steps": 40}, model={"quantiles": [0.1, 0.25, 0.5, 0.75, 0.9]},
             train={"epochs": 15})
    task = TASKS.get("forecasting")(validate_spec(s))
    prepared = task.prepare()
    Trainer(task.spec.train, progress=False).fit(task, prepared.model, prepared.train, prepared.val, prepared.meta)
    val, taus = prepared.val, [0.1, 0.25, 0.75, 0.9]

    def shares(model: torch.nn.Module) -> tuple[list[float], list[float]]:
        meta = {**prepared.meta, **task.calibrate(model, val, prepared.meta)}
        inputs = {"past": val.past, "future": val.future, "base": torch.zeros(val.target.shape, dtype=torch.float64),
                  "scale": torch.ones(len(val), dtype=torch.float64), "series_id": ["x"] * len(val),
                  "start": ["2020-01-01"] * len(val)}
        with torch.no_grad():
            quantiles = torch.stack([o["quantiles"] for o in task.forward(model.eval(), inputs, meta)])
        below = (val.target.double()[..., None] <= quantiles).double().mean(dim=(0, 1))  # (Q,)
        return meta["interval_factors"], below[[0, 1, 3, 4]].tolist()

    tolerance = 2 / val.target.numel() + 0.01
    factors, below = shares(Spread(prepared.model, 0.2))
    assert factors[2] == 1.0 and all(f > 1 for i, f in enumerate(factors) if i != 2)
    for tau, share in zip(taus, below, strict=True):
        assert abs(share - tau) <= tolerance, (tau, share)
    factors, below = shares(Spread(prepared.model, 5.0))
    assert factors == [1.0] * 5
    assert below[0] < 0.1 - tolerance and below[-1] > 0.9 + tolerance  # left wider than nominal


class Spread(torch.nn.Module):
    """A forecaster whose quantiles sit `factor` times as far from its median."""

    def __init__(self, model: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, past: torch.Tensor, future: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(past, future)  # (B, H, Q), quantiles 0.1, 0.25, 0.5, 0.75, 0.9
        median = out[..., 2:3]
        return median + self.factor * (out - median)
