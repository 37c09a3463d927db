import logging
from pathlib import Path

import pandas as pd
import pytest

from dlforge.data.series import read_series, season_length
from dlforge.errors import DataError


def write_csv(path: Path, text: str) -> str:
    path.write_text(text.strip() + "\n")
    return str(path)


def test_builtin_co2_is_weekly_with_its_nans_filled():
    from statsmodels.datasets import co2

    raw = co2.load_pandas().data["co2"]
    data = read_series("builtin:co2")
    frame = data.frames["co2"]
    assert data.freq.startswith("W") and data.season == 52
    assert data.filled["co2"] == raw.isna().sum() > 0
    assert not frame.isna().any().any() and len(frame) == len(raw)
    known = raw.dropna()
    for stamp in (known.index[0], known.index[1000], known.index[-1]):
        assert frame.loc[stamp, "co2"] == known[stamp]


def test_builtin_sunspots_elec_equip_and_macrodata():
    from statsmodels.datasets import elec_equip, macrodata, sunspots

    spots = read_series("builtin:sunspots")
    frame = spots.frames["sunspots"]
    assert spots.freq == "YS-JAN" and spots.season == 1 and len(frame) == 309
    raw = sunspots.load_pandas().data
    assert frame.loc["1800-01-01", "SUNACTIVITY"] == raw.loc[raw["YEAR"] == 1800, "SUNACTIVITY"].item()

    elec = read_series("builtin:elec_equip")
    raw = elec_equip.load_pandas().data.iloc[:, 0]
    assert elec.freq == "MS" and elec.season == 12
    assert list(elec.frames["elec_equip"]["orders"]) == list(raw)

    macro = read_series("builtin:macrodata")
    frame = macro.frames["macrodata"]
    raw = macrodata.load_pandas().data
    assert macro.season == 4 and macro.freq.startswith("QS") and len(frame) == 203
    assert macro.target == "realgdp" and macro.past == ["realcons", "realinv", "cpi", "unemp"]
    assert frame.loc["1959-04-01", "realgdp"] == raw["realgdp"][1]
    assert frame.loc["2009-07-01", "unemp"] == raw["unemp"].iloc[-1]


def test_long_csv_with_two_series_of_different_lengths(tmp_path):
    rows = ["timestamp,series_id,target,promo,store_size"]
    rows += [f"2024-01-0{d},a,{d * 1.5},{d % 2},10" for d in range(1, 6)]
    rows += [f"2024-01-0{d},b,{-d},0,20" for d in range(3, 7)]
    data = read_series(write_csv(tmp_path / "sales.csv", "\n".join(rows)), known_future=["promo"],
                       static=["store_size"])
    assert len(data) == 2 and data.freq == "D" and data.season == 7
    assert list(data.frames["a"]["target"]) == [1.5, 3.0, 4.5, 6.0, 7.5]
    assert list(data.frames["b"].index.day) == [3, 4, 5, 6] and list(data.frames["b"]["target"]) == [-3, -4, -5, -6]
    assert list(data.frames["a"].columns) == ["target", "promo"]
    assert data.static == {"a": {"store_size": 10}, "b": {"store_size": 20}}
    assert data.filled == {"a": 0, "b": 0}


def test_wide_single_series_csv_and_parquet(tmp_path):
    csv = write_csv(tmp_path / "demand.csv", "month,demand,price\n2020-01-01,5,1\n2020-02-01,6,2\n"
                                             "2020-03-01,7,3\n2020-04-01,8,4")
    data = read_series(csv, timestamp="month", target="demand", past=["price"])
    assert list(data.frames) == ["demand"] and data.freq == "MS" and data.past == ["price"]
    assert list(data.frames["demand"]["price"]) == [1, 2, 3, 4]

    table = pd.DataFrame({"timestamp": pd.date_range("2021-01-01", periods=6, freq="h"), "series_id": "x",
                          "target": range(6)})
    table.to_parquet(tmp_path / "t.parquet")
    data = read_series(str(tmp_path / "t.parquet"))
    assert data.freq == "h" and data.season == 24 and list(data.frames["x"]["target"]) == list(range(6))


GAPPY = "timestamp,target\n2024-01-01,1\n2024-01-02,2\n2024-01-04,8\n2024-01-05,9\n2024-01-06,\n2024-01-07,3"


def test_gaps_filled_by_interpolate_and_ffill_and_counted(tmp_path, caplog):
    path = write_csv(tmp_path / "gappy.csv", GAPPY)
    with caplog.at_level(logging.INFO, logger="dlforge"):
        data = read_series(path)
    assert data.freq == "D" and "most common spacing" in caplog.text and "filled 2 missing" in caplog.text
    frame = data.frames["gappy"]
    assert frame.loc["2024-01-03", "target"] == 5.0 and frame.loc["2024-01-06", "target"] == 6.0
    assert data.filled == {"gappy": 2}
    frame = read_series(path, missing="ffill").frames["gappy"]
    assert frame.loc["2024-01-03", "target"] == 2.0 and frame.loc["2024-01-06", "target"] == 9.0
    with pytest.raises(DataError, match=r"series 'gappy': 2 missing value\(s\), the first at 2024-01-03 .*ffill"):
        read_series(path, missing="error")


def test_monthly_gap_is_inferred_as_month_start(tmp_path):
    path = write_csv(tmp_path / "m.csv", "timestamp,target\n2020-01-01,1\n2020-02-01,2\n2020-03-01,3\n"
                                         "2020-05-01,5\n2020-06-01,6")
    data = read_series(path)
    assert data.freq == "MS"  # time interpolation weighs by days: April 1 is 31 of the 61 days after March 1
    assert data.frames["m"].loc["2020-04-01", "target"] == pytest.approx(3 + 2 * 31 / 61)


def test_duplicate_unsorted_and_off_grid_timestamps_are_errors(tmp_path):
    head = "timestamp,series_id,target\n2024-01-01,a,1\n2024-01-02,a,2\n2024-01-03,a,3\n"
    dup = write_csv(tmp_path / "dup.csv", head + "2024-01-01,b,1\n2024-01-02,b,2\n2024-01-02,b,3\n2024-01-03,b,4")
    with pytest.raises(DataError, match=r"dup.csv:7: series 'b': timestamp 2024-01-02 repeats .*dup.csv:6"):
        read_series(dup)
    unsorted = write_csv(tmp_path / "uns.csv", head + "2024-01-02,a,4")
    with pytest.raises(DataError, match=r"uns.csv:5: series 'a': timestamp 2024-01-02 comes before 2024-01-03"):
        read_series(unsorted)
    off = write_csv(tmp_path / "off.csv", head + "2024-01-04 12:00,a,4")
    with pytest.raises(DataError, match=r"off.csv:5: series 'a': timestamp 2024-01-04 12:00:00 is not on the D grid"):
        read_series(off, freq="D")


def test_bad_columns_cells_and_static_are_errors(tmp_path):
    path = write_csv(tmp_path / "s.csv", "timestamp,series_id,target,region\n2024-01-01,a,1,n\n2024-01-02,a,2,s\n"
                                         "2024-01-03,a,3,n")
    with pytest.raises(DataError, match=r"no column 'promo' \(data.known_future\); columns: timestamp, series_id, "
                                        r"target, region"):
        read_series(path, known_future=["promo"])
    with pytest.raises(DataError, match=r"s.csv:3: series 'a': static column 'region' is 's' here but 'n' on .*:2"):
        read_series(path, static=["region"])
    text = write_csv(tmp_path / "x.csv", "timestamp,target\n2024-01-01,1\n2024-01-02,2\n2024-01-03,x")
    with pytest.raises(DataError, match=r"x.csv:4: column 'target': 'x' is not a number"):
        read_series(text)
    short = write_csv(tmp_path / "short.csv", "timestamp,target\n2024-01-01,1\n2024-01-02,2")
    with pytest.raises(DataError, match="has 2 point"):
        read_series(short)
    bad_time = write_csv(tmp_path / "t.csv", "timestamp,target\n2024-01-01,1\nsoon,2\n2024-01-03,3")
    with pytest.raises(DataError, match=r"t.csv:3: column 'timestamp': cannot read 'soon'"):
        read_series(bad_time)


def test_series_disagreeing_on_frequency(tmp_path):
    path = write_csv(tmp_path / "f.csv", "timestamp,series_id,target\n2024-01-01,a,1\n2024-01-02,a,2\n"
                                         "2024-01-03,a,3\n2024-01-01,b,1\n2024-02-01,b,2\n2024-03-01,b,3")
    with pytest.raises(DataError, match="disagree on frequency: series 'a' is D, series 'b' is MS"):
        read_series(path)


def test_season_length():
    assert [season_length(f) for f in ("W-SUN", "MS", "ME", "QS-OCT", "YS", "D", "h", "2h", "3MS", "7D")] == \
        [52, 12, 12, 4, 1, 7, 24, 12, 4, 1]
