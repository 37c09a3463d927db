"""Time series for forecasting: a long CSV/Parquet table, a single wide series, or a built-in set.

Every source becomes a `SeriesSet`: one DataFrame per series on a complete, regular time index of
one shared frequency, with target and covariate columns, and the series' static attributes.
Files and built-in sets go through the same checks, so a built-in set with gaps or NaNs (co2) is
filled by the same `missing` policy as a file. Problems in a file are reported by file and CSV
line (the header is line 1) or Parquet row, before any training starts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pandas.tseries import offsets
from pandas.tseries.frequencies import to_offset

from dlforge._progress import progress
from dlforge.errors import DataError
from dlforge.registry import DATASETS

log = logging.getLogger("dlforge")

MissingPolicy = Literal["interpolate", "ffill", "error"]
MIN_POINTS = 3  # pd.infer_freq needs at least three timestamps

# Steps in one natural cycle at n=1, by offset class: a year of weeks, months or quarters; a week of
# days; a day of hours. Yearly data has no shorter cycle, so 1 (seasonal-naive = naive).
_CYCLES: tuple[tuple[tuple[type, ...], int], ...] = (
    ((offsets.Week,), 52),
    ((offsets.MonthBegin, offsets.MonthEnd, offsets.BusinessMonthBegin, offsets.BusinessMonthEnd), 12),
    ((offsets.QuarterBegin, offsets.QuarterEnd, offsets.BQuarterBegin, offsets.BQuarterEnd), 4),
    ((offsets.YearBegin, offsets.YearEnd, offsets.BYearBegin, offsets.BYearEnd), 1),
    ((offsets.BusinessDay,), 5),
    ((offsets.Day,), 7),
    ((offsets.Hour,), 24),
    ((offsets.Minute, offsets.Second), 60),
)


@dataclass
class SeriesSet:
    """Regular time series sharing one frequency, each on its own complete time index."""

    frames: dict[str, pd.DataFrame]  # series_id -> regular DatetimeIndex; columns: target, known_future, past
    target: str
    freq: str  # pandas alias, e.g. "W-SAT", "YS-JAN", "MS", "QS-JAN"
    known_future: list[str]  # covariates known ahead (calendar, promotions)
    past: list[str]  # covariates observed only up to now
    static: dict[str, dict[str, Any]]  # series_id -> static attributes
    season: int  # seasonal period in steps, for seasonal-naive and MASE
    filled: dict[str, int]  # series_id -> values filled by the missing-value policy

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class SeriesTable:
    """A long table before checking: what files are read into and built-in factories return."""

    frame: pd.DataFrame  # one row per (series, timestamp), in source order
    where: str  # names the source in messages
    target: str
    timestamp: str = "timestamp"
    series_id: str | None = None  # None: the whole table is one series, named `where`'s stem
    known_future: list[str] = field(default_factory=list)
    past: list[str] = field(default_factory=list)
    static: list[str] = field(default_factory=list)
    first_line: int | None = None  # CSV line of row 0 (2: after the header); None names rows by index

    def at(self, row: int) -> str:
        return f"{self.where}:{row + self.first_line}" if self.first_line else f"{self.where} row {row}"

    @property
    def values(self) -> list[str]:
        return [self.target, *self.known_future, *self.past]


def read_series(source: str, *, timestamp: str = "timestamp", series_id: str | None = "series_id",
                target: str = "target", known_future: Sequence[str] = (), past: Sequence[str] = (),
                static: Sequence[str] = (), missing: MissingPolicy = "interpolate",
                freq: str | None = None) -> SeriesSet:
    """Read `builtin:<name>` or a long .csv/.parquet table (`timestamp, series_id, target`, covariates).

    Without a `series_id` column the table is one series (wide form: timestamp, target and covariates
    as columns). The column arguments apply to files; a built-in set names its own columns. The
    frequency is `freq` or inferred; every series is reindexed to its complete regular range and the
    gaps and NaNs filled by `missing`.
    """
    if source.startswith("builtin:"):
        table = DATASETS.get(source.removeprefix("builtin:"))()
        if not isinstance(table, SeriesTable):
            raise DataError(f"{source}: not a time-series dataset")
    else:
        table = _read_file(Path(source), timestamp, series_id, target, known_future, past, static)
    return _regularised(table, missing, freq)


def season_length(freq: str) -> int:
    """Steps per natural cycle of `freq` (52 weekly, 12 monthly, 4 quarterly, 1 yearly, 7 daily, 24 hourly).

    A multiple divides the cycle ("2h" -> 12, "3MS" -> 4); one that does not divide it has no season (1).
    """
    offset = to_offset(freq)
    cycle = next((steps for kinds, steps in _CYCLES if isinstance(offset, kinds)), 1)
    n = abs(offset.n)
    return cycle // n if cycle % n == 0 else 1


# ------------------------------------------------------------------ reading


def _read_file(path: Path, timestamp: str, series_id: str | None, target: str, known_future: Sequence[str],
               past: Sequence[str], static: Sequence[str]) -> SeriesTable:
    if not path.is_file():
        raise DataError(f"{path}: no such file (data.source)")
    is_csv = path.suffix.lower() == ".csv"
    if not is_csv and path.suffix.lower() not in {".parquet", ".pq"}:
        raise DataError(f"{path}: expected a .csv or .parquet table of timestamp, series_id, target")
    try:
        # Series ids stay text, so "007" and "7" are different series.
        frame = pd.read_csv(path, dtype={series_id: str} if series_id else None) if is_csv else pd.read_parquet(path)
    except Exception as e:  # pandas raises many types for a bad file
        raise DataError(f"{path}: cannot read table: {e}") from None
    if series_id is not None and series_id not in frame.columns and series_id != "series_id":
        raise _missing_column(path, frame, series_id, "data.series_id")  # named on purpose, so expected
    table = SeriesTable(frame, str(path), target, timestamp, series_id if series_id in frame.columns else None,
                        list(known_future), list(past), list(static), 2 if is_csv else None)
    named = [(timestamp, "data.timestamp"), (target, "data.target"), *((c, "data.known_future") for c in known_future),
             *((c, "data.past") for c in past), *((c, "data.static") for c in static)]
    for column, setting in named:
        if column not in frame.columns:
            raise _missing_column(path, frame, column, setting)
    return table


def _missing_column(path: Path, frame: pd.DataFrame, column: str | None, setting: str) -> DataError:
    return DataError(f"{path}: no column {column!r} ({setting}); columns: {', '.join(map(str, frame.columns))}")


def _parsed(table: SeriesTable) -> tuple[pd.Series, pd.DataFrame]:
    """The timestamps and the numeric value columns, or an error naming the first bad cell."""
    raw = table.frame[table.timestamp]
    stamps = pd.to_datetime(raw, errors="coerce", format="ISO8601")  # dates and date-times may mix
    if stamps.isna().any():  # other layouts (01/31/2024): pandas infers one from the first cell
        stamps = min(stamps, pd.to_datetime(raw, errors="coerce"), key=lambda s: s.isna().sum())
    bad = stamps.isna().to_numpy().nonzero()[0]
    if len(bad):
        row = bad[0]
        cell = "an empty cell" if pd.isna(raw.iloc[row]) else repr(raw.iloc[row])
        raise DataError(f"{table.at(row)}: column {table.timestamp!r}: cannot read {cell} as a timestamp "
                        "(write ISO dates such as 2024-01-31 or 2024-01-31 13:00)")
    values = pd.DataFrame(index=table.frame.index)
    for column in table.values:
        values[column] = pd.to_numeric(table.frame[column], errors="coerce").astype("float64")
        bad = (values[column].isna() & table.frame[column].notna()).to_numpy().nonzero()[0]
        if len(bad):
            row = bad[0]
            raise DataError(f"{table.at(row)}: column {column!r}: {table.frame[column].iloc[row]!r} is not a number "
                            "(leave the cell empty for a missing value)")
    return stamps, values


# ------------------------------------------------------------------ checking and regularising


def _regularised(table: SeriesTable, missing: MissingPolicy, freq: str | None) -> SeriesSet:
    """Check every series, settle one frequency, reindex each to its full range and fill the gaps."""
    stamps, values = _parsed(table)
    ids = table.frame[table.series_id].astype(str) if table.series_id else pd.Series(Path(table.where).stem,
                                                                                      index=table.frame.index)
    groups = {str(sid): rows.to_numpy() for sid, rows in ids.groupby(ids, sort=False).groups.items()}
    static, freqs = {}, {}
    for sid, rows in progress(groups.items(), len(groups), "checking series"):
        static[sid] = _static(table, sid, rows)
        _check_order(table, sid, rows, stamps.iloc[rows])
        if freq is None:
            freqs[sid] = _series_freq(table, sid, pd.DatetimeIndex(stamps.iloc[rows]))
    freq = _settled_freq(table, freqs, freq)
    frames, filled = {}, {}
    for sid, rows in groups.items():
        frame = _on_grid(table, sid, rows, stamps.iloc[rows], values.iloc[rows], freq)
        frames[sid], filled[sid] = _filled(table, sid, frame, missing)
    if sum(filled.values()):
        log.info("%s: filled %d missing value(s) in %d of %d series (data.missing: %s)", table.where,
                 sum(filled.values()), sum(n > 0 for n in filled.values()), len(frames), missing)
    return SeriesSet(frames, table.target, freq, table.known_future, table.past, static, season_length(freq), filled)


def _static(table: SeriesTable, sid: str, rows: Any) -> dict[str, Any]:
    """The series' static attributes, which must hold one value across all its rows."""
    attributes = {}
    for column in table.static:
        cells = table.frame[column].iloc[rows]
        differs = (cells != cells.iloc[0]) & ~(cells.isna() & pd.isna(cells.iloc[0]))
        if differs.any():
            other = int(differs.to_numpy().nonzero()[0][0])
            raise DataError(f"{table.at(rows[other])}: series {sid!r}: static column {column!r} is "
                            f"{cells.iloc[other]!r} here but {cells.iloc[0]!r} on {table.at(rows[0])} "
                            "(a static attribute must be the same on every row of a series)")
        attributes[column] = cells.iloc[0]
    return attributes


def _check_order(table: SeriesTable, sid: str, rows: Any, stamps: pd.Series) -> None:
    """Enough points to infer a frequency, and strictly increasing timestamps."""
    if len(rows) < MIN_POINTS:
        raise DataError(f"{table.at(rows[0])}: series {sid!r} has {len(rows)} point(s); at least {MIN_POINTS} "
                        "are needed to infer its frequency (drop the series or add points)")
    steps = stamps.diff().iloc[1:].to_numpy()
    back = (steps < pd.Timedelta(0)).nonzero()[0]
    if len(back):
        i = back[0] + 1
        raise DataError(f"{table.at(rows[i])}: series {sid!r}: timestamp {_show(stamps.iloc[i])} comes before "
                        f"{_show(stamps.iloc[i - 1])} on the line above it (sort the rows by series and timestamp)")
    same = (steps == pd.Timedelta(0)).nonzero()[0]
    if len(same):
        i = same[0] + 1
        raise DataError(f"{table.at(rows[i])}: series {sid!r}: timestamp {_show(stamps.iloc[i])} repeats "
                        f"{table.at(rows[i - 1])} (keep one row per series and timestamp)")


def _series_freq(table: SeriesTable, sid: str, index: pd.DatetimeIndex) -> str:
    """The series' frequency: inferred from all its timestamps, or where gaps hide it, from its spacing."""
    found = _infer(index)
    if found is None:
        found = _spacing_freq(index)
        if found is None:
            raise DataError(f"{table.where}: series {sid!r}: cannot infer a frequency from its timestamps "
                            "(set data.freq, e.g. D, W-SUN, MS, QS, YS)")
        log.info("%s: series %r has gaps; frequency %s inferred from its most common spacing", table.where, sid, found)
    return found


def _infer(index: pd.DatetimeIndex) -> str | None:
    with pd.option_context("future.infer_freq_returns_offset", True):
        try:
            found = pd.infer_freq(index)
        except ValueError:  # e.g. too few points in a window
            return None
    return None if found is None else found.freqstr


def _spacing_freq(index: pd.DatetimeIndex) -> str | None:
    """The most common frequency over windows of three consecutive timestamps: calendar-aware, so months of
    28 to 31 days still read as one monthly step, and a gap spoils only the windows around it."""
    votes = Counter(_infer(index[i:i + MIN_POINTS]) for i in range(len(index) - MIN_POINTS + 1))
    votes.pop(None, None)
    return votes.most_common(1)[0][0] if votes else None


def _settled_freq(table: SeriesTable, freqs: dict[str, str], freq: str | None) -> str:
    """`freq` when given, else the one frequency all series share."""
    if freq is not None:
        try:
            return to_offset(freq).freqstr
        except ValueError:
            raise DataError(f"{table.where}: data.freq {freq!r} is not a pandas frequency "
                            "(e.g. D, W-SUN, MS, QS, YS, h)") from None
    distinct = dict(zip(freqs.values(), freqs.keys(), strict=False))  # freq -> one series having it
    if len(distinct) > 1:
        shown = ", ".join(f"series {sid!r} is {f}" for f, sid in list(distinct.items())[:2])
        raise DataError(f"{table.where}: the series disagree on frequency: {shown} (set data.freq to choose one; "
                        "series off its grid are then errors)")
    return next(iter(distinct))


def _on_grid(table: SeriesTable, sid: str, rows: Any, stamps: pd.Series, values: pd.DataFrame,
             freq: str) -> pd.DataFrame:
    """The series reindexed to every step of `freq` from its first to its last timestamp (new steps are NaN)."""
    grid = pd.date_range(stamps.iloc[0], stamps.iloc[-1], freq=freq, name=table.timestamp)
    off = (~stamps.isin(grid)).to_numpy().nonzero()[0]
    if len(off):
        raise DataError(f"{table.at(rows[off[0]])}: series {sid!r}: timestamp {_show(stamps.iloc[off[0]])} is "
                        f"not on the {freq} grid starting {_show(grid[0]) if len(grid) else _show(stamps.iloc[0])} "
                        "(fix the timestamp, or set data.freq)")
    return values.set_index(pd.DatetimeIndex(stamps, name=table.timestamp)).reindex(grid)


def _filled(table: SeriesTable, sid: str, frame: pd.DataFrame, missing: MissingPolicy) -> tuple[pd.DataFrame, int]:
    """The frame with its NaNs filled by the policy, and how many values were filled."""
    holes = frame.isna()
    count = int(holes.to_numpy().sum())
    if count and missing == "error":
        first = holes.any(axis=1).to_numpy().nonzero()[0][0]
        raise DataError(f"{table.where}: series {sid!r}: {count} missing value(s), the first at "
                        f"{_show(frame.index[first])} (set data.missing: interpolate or ffill)")
    if missing == "interpolate":
        frame = frame.interpolate(method="time").ffill().bfill()
    elif missing == "ffill":
        frame = frame.ffill().bfill()
    elif missing != "error":
        raise DataError(f"{table.where}: unknown data.missing {missing!r}; expected interpolate, ffill or error")
    empty = [c for c in frame.columns if frame[c].isna().all()]
    if empty:
        raise DataError(f"{table.where}: series {sid!r}: column {empty[0]!r} has no values at all")
    return frame, count


def _show(stamp: pd.Timestamp) -> str:
    """A date alone when the time is midnight, as users write it."""
    return stamp.strftime("%Y-%m-%d") if stamp == stamp.normalize() else stamp.isoformat(sep=" ")


# ------------------------------------------------------------------ built-in sets (statsmodels' bundled data)


def _long(frame: pd.DataFrame, stamps: Any, where: str, target: str, past: Sequence[str] = ()) -> SeriesTable:
    """One built-in series as a table: `stamps` become the timestamp column, rows named by index."""
    frame = frame.reset_index(drop=True).assign(timestamp=pd.DatetimeIndex(stamps))
    return SeriesTable(frame, where, target, past=list(past))


@DATASETS.register("co2")
def co2() -> SeriesTable:
    """Weekly Mauna Loa CO2 (ppm), 1958-2001: 2284 weeks, 59 of them NaN (filled by data.missing)."""
    from statsmodels.datasets import co2 as data

    frame = data.load_pandas().data
    return _long(frame, frame.index, "co2", "co2")


@DATASETS.register("sunspots")
def sunspots() -> SeriesTable:
    """Yearly sunspot activity, 1700-2008 (309 years). Season 1: the ~11-year solar cycle varies from about
    9 to 14 years, so no fixed seasonal period fits it; models learn it from their window."""
    from statsmodels.datasets import sunspots as data

    frame = data.load_pandas().data
    years = pd.to_datetime(frame["YEAR"].astype(int).astype(str), format="%Y")
    return _long(frame.drop(columns="YEAR"), years, "sunspots", "SUNACTIVITY")


@DATASETS.register("elec_equip")
def elec_equip() -> SeriesTable:
    """Monthly euro-area electrical equipment orders index, 1995-2012 (the statsmodels STL example)."""
    from statsmodels.datasets import elec_equip as data

    frame = data.load_pandas().data
    return _long(frame.set_axis(["orders"], axis=1), frame.index, "elec_equip", "orders")


MACRO_PAST = ("realcons", "realinv", "cpi", "unemp")


@DATASETS.register("macrodata")
def macrodata() -> SeriesTable:
    """US quarterly macroeconomics, 1959Q1-2009Q3 (203 quarters): target real GDP (`realgdp`), with real
    consumption, real investment, CPI and unemployment as past covariates (observed with GDP, not known
    ahead). The other columns are derived from these or are near-duplicates, so they are left out."""
    from statsmodels.datasets import macrodata as data

    frame = data.load_pandas().data
    starts = pd.PeriodIndex.from_fields(year=frame["year"].astype(int), quarter=frame["quarter"].astype(int),
                                        freq="Q").to_timestamp()
    return _long(frame[["realgdp", *MACRO_PAST]], starts, "macrodata", "realgdp", MACRO_PAST)
