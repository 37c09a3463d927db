"""Tabular classification: rows of numeric and categorical columns (CSV, Parquet, `builtin:adult`) -> a label.

An item is one raw row, a dict {column: value}, as a table or a client gives it: {"age": 39, "workclass":
"State-gov", ...}; None (null) is a missing value. Preprocessing is fitted on the training split alone and kept
in meta["preprocessing"] (see `dlforge.data.tables`): numbers standardised, missing numbers imputed with the
training mean plus a 0/1 indicator, categories indexed with 0 for unknown or missing. Missing values and unseen
categories are counted: per split in meta["data"], over the evaluated rows in the evaluation's "inputs".

Columns outside the model's inputs (`data.exclude`, e.g. the groups a fairness audit compares) stay in the items.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from dlforge.data.split import split_data
from dlforge.data.tables import (
    NA_VALUES,
    Table,
    TabularDataset,
    category,
    clean,
    encode,
    feature_names,
    fit_preprocessing,
    number,
    read_table,
    read_tables,
    resolve_columns,
)
from dlforge.errors import DataError, DlforgeError, InputError, listed
from dlforge.models.pretrained import load_pretrained
from dlforge.models.tabular import TABULAR_MODELS
from dlforge.pages import Section, table
from dlforge.registry import TASKS, did_you_mean
from dlforge.spec import DataSpec, ModelSpec, SpecBase, resolve_path
from dlforge.tasks.base import Prepared
from dlforge.tasks.classification import ClassificationTask
from dlforge.wire import Limits, Wire

if TYPE_CHECKING:
    import pandas as pd

    from dlforge.run import Run
    from dlforge.tasks.base import Inference

BUILTIN_LABELS = {"builtin:adult": "income"}
COLUMNS_ASSET = "columns.json"


class TabularDataSpec(DataSpec):
    source: str = Field(description="builtin:adult, or a .csv (with a header row) or .parquet file")
    test_source: str | None = Field(None, description="a separate test file with the same columns; then split.test "
                                                      "is unused and split.val is a share of `source`")
    label: str | None = Field(None, description="the column to predict (builtin:adult: income)")
    features: list[str] | None = Field(None, description="the model's input columns; default: all but the label")
    categorical: list[str] | None = Field(None, description="which features are categories; default: those whose "
                                                            "values are not (nearly all) numbers")
    exclude: list[str] = Field(default_factory=list, description="columns kept out of the model's inputs; they stay "
                                                                 "in the items (e.g. groups for a fairness audit)")
    na_values: list[str] = Field(list(NA_VALUES), description="cell texts that mean a missing value")
    on_error: Literal["error", "skip"] = Field("error", description="a non-number in a numeric column or a missing "
                                                                    "label: stop, or drop the row (counted)")

    @field_validator("source", "test_source")
    @classmethod
    def _path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return value if value is None else resolve_path(value, info)


class TabularModelSpec(ModelSpec):
    registry = TABULAR_MODELS
    reserved = ("numeric_features", "cardinalities", "num_classes")

    name: str = Field("mlp", description="mlp: an embedding per categorical column, then Linear/ReLU/norm/dropout "
                                         "blocks (kwargs: hidden, dropout, norm: batch|layer|none)")


class TabularClassificationSpec(SpecBase):
    task: Literal["tabular_classification"] = "tabular_classification"
    data: TabularDataSpec
    model: TabularModelSpec = TabularModelSpec()


# ---------------------------------------------------------------- the wire format: one row as a JSON object


class TabularWire(Wire):
    """{"column": value, ...}: every feature (null for a missing value); other columns the data had may come
    along and stay in the item. A JSON string of that object is accepted too (KServe V2 BYTES). Decoding needs a
    run's columns: a task loaded from a run has a wire that knows them.

    One rule for what is missing, as in strict JSON: null. A numeric column takes a finite number or null (not a
    string, not NaN or Infinity) within `SPAN` training standard deviations of the training mean (the schema's
    minimum and maximum): further out, the float32 model's output overflows to NaN. A category column takes a
    string, a number, a boolean or null; a category the training data did not have is accepted as unknown."""

    kind = "table"

    def __init__(self, columns: dict[str, Any] | None = None) -> None:
        self.columns = columns  # meta["preprocessing"] of the run

    def decode(self, value: Any, field: str, limits: Limits) -> dict[str, Any]:
        prep = self.columns
        if prep is None:
            raise DlforgeError("tabular instances are decoded by the wire of a loaded run: dlforge.load(run).wire")
        if isinstance(value, str | bytes):
            try:
                value = json.loads(value)
            except ValueError:
                raise InputError(field, "expected an object of column values (or its JSON)") from None
        if not isinstance(value, dict):
            raise InputError(field, f"expected an object of column values, e.g. {self.example({'preprocessing': prep})}"
                                    f", got {_kind(value)}")
        features = feature_names(prep)
        for key in value:
            if key not in prep["columns"]:
                raise InputError(f"{field}.{key}", f"unknown column{did_you_mean(str(key), features)}; the features "
                                                   f"are {', '.join(features)}")
        absent = [name for name in features if name not in value]
        if len(absent) == 1:
            raise InputError(f"{field}.{absent[0]}", "missing: every feature needs a value (null for a missing one)")
        if absent:
            raise InputError(field, f"missing features {listed(absent)}: every feature needs a value (null for a "
                                    "missing one)")
        numeric = {c["name"]: c for c in prep["numeric"]}
        for key, v in value.items():
            where = f"{field}.{key}"
            if isinstance(v, dict | list):
                raise InputError(where, f"expected a single value, got {_kind(v)}")
            if isinstance(v, str) and len(v) > limits.max_text_chars:
                raise InputError(where, f"{len(v)} characters is over the limit of {limits.max_text_chars}", 413)
            if isinstance(v, float) and not math.isfinite(v):
                raise InputError(where, f"{v!r} is not a JSON value; send null for a missing one")
            if key in numeric:
                if isinstance(v, str):
                    raise InputError(where, f"{v[:40]!r} is not a number (a string); expected a number or null")
                try:
                    x = number(v, prep["na_values"])
                except (ValueError, OverflowError) as e:  # OverflowError: an int beyond float64's range
                    raise InputError(where, f"{e}; expected a number or null") from None
                low, high = _span(numeric[key])
                if not math.isnan(x) and not low <= x <= high:  # (NaN: missing)
                    raise InputError(where, f"{v!r} is outside {low:.6g}..{high:.6g}, {SPAN:g} training standard "
                                            "deviations around the training mean")
        return dict(value)

    def encode(self, item: Any) -> dict[str, Any]:
        return {str(k): _plain(v) for k, v in item.items()}

    def example(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The training medians and most frequent categories."""
        prep = meta["preprocessing"]
        out: dict[str, Any] = {c["name"]: round(c["median"]) if c["integer"] else c["median"] for c in prep["numeric"]}
        return out | {c["name"]: c["mode"] for c in prep["categorical"]}

    def schema(self, meta: dict[str, Any]) -> dict[str, Any]:
        prep = meta.get("preprocessing", {})
        scalar = {"type": ["string", "number", "boolean", "null"]}
        properties: dict[str, Any] = {name: scalar for name in prep.get("columns", []) if name != prep.get("label")}
        for c in prep.get("numeric", []):
            low, high = _span(c)
            properties[c["name"]] = {"type": ["number", "null"], "minimum": low, "maximum": high,
                                     "description": "null: missing (NaN is not JSON)"}
        for c in prep.get("categorical", []):
            properties[c["name"]] = {**scalar, "examples": c["categories"][:20],
                                     "description": "a category (null: missing); one the training data did not "
                                                    "have is accepted as unknown"}
        return {"type": "object", "properties": properties, "additionalProperties": False,
                "required": feature_names(prep) if prep else []}

    def statistics(self, items: list[Any], meta: dict[str, Any]) -> pd.DataFrame:
        """The features themselves (numbers as floats, categories as strings, missing as NaN/None), and per row the
        number of missing features and of unseen categories."""
        import pandas as pd

        prep = meta["preprocessing"]
        na = prep["na_values"]
        columns: dict[str, Any] = {}
        missing, unseen = np.zeros(len(items), np.int64), np.zeros(len(items), np.int64)
        for c in prep["numeric"]:
            values = np.array([_safe(number, item.get(c["name"]), na, math.nan) for item in items], np.float64)
            missing += np.isnan(values)
            columns[c["name"]] = values
        for c in prep["categorical"]:
            known = set(c["categories"])
            values = [_safe(category, item.get(c["name"]), na, None) for item in items]
            missing += np.array([v is None for v in values], bool)
            unseen += np.array([v is not None and v not in known for v in values], bool)
            columns[c["name"]] = pd.Series(values, dtype=object)
        frame = pd.DataFrame(columns, index=range(len(items)))
        for name, counts in (("missing_values", missing), ("unseen_categories", unseen)):
            if name not in frame:
                frame[name] = counts
        return frame


SPAN = 1e6  # how many training standard deviations from the training mean a number may lie


def _span(column: dict[str, Any]) -> tuple[float, float]:
    """The numbers a numeric column takes: the training mean +- SPAN standard deviations."""
    reach = SPAN * max(column["std"], abs(column["mean"]), 1.0)  # std alone can be tiny (an almost constant column)
    return column["mean"] - reach, column["mean"] + reach


def _safe(convert: Any, value: Any, na: Sequence[str], default: Any) -> Any:
    try:
        return convert(value, na)
    except ValueError:
        return default


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- the task


@TASKS.register("tabular_classification")
class TabularClassification(ClassificationTask):
    spec_class = TabularClassificationSpec
    wire: ClassVar[TabularWire] = TabularWire()  # without columns: example, schema, statistics (they take meta)
    graph_outputs = ("logits",)
    # explanations attribute to the numbers as they are and to the categories through their embeddings
    explained_inputs: ClassVar[tuple[str, ...]] = ("numeric", "categorical")

    def __init__(self, spec: SpecBase) -> None:
        super().__init__(spec)
        self.wire = TabularWire()  # this task's own: given the columns by `prepare` or `load_assets`

    @classmethod
    def example_spec(cls, folder: Path) -> dict[str, Any]:
        """60 rows (folder/table.csv) of a numeric column with missing values, a count and a colour, a group column
        kept out of the model, and a yes/no label; a one-layer MLP."""
        from dlforge.data.examples import table_rows, write_csv

        source = write_csv(Path(folder) / "table.csv", table_rows(60))
        return {"name": "table-example", "task": "tabular_classification",
                "data": {"source": str(source), "label": "label", "exclude": ["group"],
                         "split": {"val": 0.2, "test": 0.2, "seed": 0}},
                "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
                "train": {"epochs": 1, "batch_size": 16, "seed": 0}}

    def _use(self, prep: dict[str, Any]) -> None:
        """The run's columns: the wire decodes with them; an input with no columns is not explained."""
        self.wire = TabularWire(prep)
        self.explained_inputs = tuple(name for name in ("numeric", "categorical") if prep[name])

    # ------------------------------------------------------------ data
    def _label(self) -> str:
        d = self.spec.data
        label = d.label or BUILTIN_LABELS.get(d.source)
        if label is None:
            raise DataError("data.label: name the column to predict")
        return label

    def _read(self) -> tuple[Table, Table | None, str, list[str], list[str]]:
        """The cleaned data and separate test table, the label, numeric and categorical features."""
        d, label = self.spec.data, self._label()
        main, held = read_tables(d.source, d.test_source, d.na_values)
        numeric, categorical = resolve_columns(main, label, d.features, d.categorical, d.exclude)
        main = clean(main, label, numeric, categorical, d.on_error)
        held = None if held is None else clean(held, label, numeric, categorical, d.on_error)
        return main, held, label, numeric, categorical

    def _split(self, main: Table, held: Table | None, label: str, classes: list[str]) -> tuple[Table, Table, Table]:
        if held is None:
            train, val, test = split_data(_targets(main, label, classes), self.spec.data)
            return main.subset(train), main.subset(val), main.subset(test)
        train, val, _ = split_data(_targets(main, label, classes), self.spec.data, test=0.0)
        return main.subset(train), main.subset(val), held

    def prepare(self) -> Prepared:
        d, m = self.spec.data, self.spec.model
        main, held, label, numeric, categorical = self._read()
        classes = sorted(set(main.frame[label]))
        if len(classes) < 2:
            raise DataError(f"{main.source}: column {label!r} has one label ({classes[0]!r}); a classifier needs two "
                            "or more")
        splits = dict(zip(("train", "val", "test"), self._split(main, held, label, classes), strict=True))
        prep = fit_preprocessing(splits["train"].rows(label), label, numeric, categorical, list(main.frame.columns),
                                 d.na_values)
        self._use(prep)
        encoded = {name: encode(part.rows(label), prep) for name, part in splits.items()}
        dropped = {k: main.counts.get(k, 0) + (held.counts.get(k, 0) if held else 0)
                   for k in sorted({*main.counts, *(held.counts if held else {})})}
        counts = {name: c for name, (_, c) in encoded.items()}
        meta = {"classes": classes, "model": m.name, "model_kwargs": m.kwargs, "preprocessing": prep,
                "sizes": {name: len(part.where) for name, part in splits.items()},
                "data": {"rows": len(main.where) + (len(held.where) if held else 0) + sum(dropped.values()),
                         "dropped": dropped, "missing": {name: c["missing"] for name, c in counts.items()},
                         "unseen": {name: c["unseen"] for name, c in counts.items() if name != "train"}}}
        model = self.build_model(meta)
        if m.pretrained is not None:
            meta["pretrained"] = load_pretrained(model, m.pretrained, classes)
        train, val = (TabularDataset(encoded[name][0], _targets(splits[name], label, classes))
                      for name in ("train", "val"))
        test = splits["test"]
        return Prepared(model, train, val, (test.rows(label), _targets(test, label, classes)), meta,
                        train_columns=(splits["train"].frame.drop(columns=[label]), train.targets.numpy()))

    def build_model(self, meta: dict[str, Any]) -> nn.Module:
        prep = meta["preprocessing"]
        width = len(prep["numeric"]) + sum(c["indicator"] for c in prep["numeric"])
        return TabularModelSpec.build(meta["model"], meta["model_kwargs"], numeric_features=width,
                                      cardinalities=[len(c["categories"]) for c in prep["categorical"]],
                                      num_classes=len(meta["classes"]))

    def save_assets(self, directory: Path) -> None:
        from dlforge._io import atomic_write_json

        atomic_write_json(directory / COLUMNS_ASSET, self.wire.columns)

    def load_assets(self, directory: Path) -> None:
        path = directory / COLUMNS_ASSET
        if path.exists():
            self._use(json.loads(path.read_text()))

    # ------------------------------------------------------------ inference
    def step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs, targets = batch
        outputs = model(**inputs)  # (B, K) logits
        return self.loss(outputs, targets), outputs, targets

    def preprocess(self, items: Sequence[Any], meta: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Rows (dicts, or their JSON as `dlforge predict RUN --text '{...}'` gives them) -> numeric (B, F) and
        categorical (B, C)."""
        rows = [_parse(item, i) if isinstance(item, str | bytes) else item for i, item in enumerate(items)]
        try:
            return encode(rows, meta["preprocessing"])[0]
        except ValueError as e:
            raise DlforgeError(str(e)) from None

    def forward(self, graph: nn.Module, inputs: dict[str, torch.Tensor], meta: dict[str, Any], **options: Any
                ) -> torch.Tensor:
        return graph(inputs["numeric"], inputs["categorical"]).float()

    def example_inputs(self, meta: dict[str, Any], batch: int = 2) -> dict[str, torch.Tensor]:
        # the typical row, and one with every feature missing (imputed, indicators on, unknown categories)
        typical = self.wire.example(meta)
        rows = [typical if i % 2 == 0 else dict.fromkeys(typical) for i in range(batch)]
        return self.preprocess(rows, meta)

    def feature_names(self, meta: dict[str, Any]) -> dict[str, list[str]]:
        prep = meta["preprocessing"]
        return {"numeric": [c["name"] for c in prep["numeric"]]
                + [f"{c['name']} (missing)" for c in prep["numeric"] if c["indicator"]],
                "categorical": [c["name"] for c in prep["categorical"]]}

    # ------------------------------------------------------------ evaluation and report
    def evaluation_data(self, meta: dict[str, Any], source: str | None = None) -> tuple[Sequence[Any], Any]:
        prep, classes = meta["preprocessing"], meta["classes"]
        label = prep["label"]
        numeric, categorical = [c["name"] for c in prep["numeric"]], [c["name"] for c in prep["categorical"]]
        if source is None:
            main, held, *_ = self._read()
            data = self._split(main, held, label, classes)[2]
        else:
            table = read_table(source, prep["na_values"])
            if label not in table.frame.columns:  # unlabelled rows: enough to predict and monitor, not to evaluate
                return clean(table, None, numeric, categorical, self.spec.data.on_error).rows(), None
            data = clean(table, label, numeric, categorical, self.spec.data.on_error)
        return data.rows(label), _targets(data, label, classes)

    def evaluate(self, predictor: Inference, items: Sequence[Any], targets: Any, plots_dir: Path) -> dict[str, Any]:
        result = super().evaluate(predictor, items, targets, plots_dir)
        _, counts = encode(list(items), predictor.meta["preprocessing"])
        return {**result, "inputs": counts}  # missing values and unseen categories per column

    def report_sections(self, run: Run) -> list[Section]:
        sections = super().report_sections(run)
        ev, meta = run.read_eval(), run.read_meta()
        if ev is None or "inputs" not in ev:
            return sections
        prep = meta["preprocessing"]
        rows = [[c["name"], "numeric", ev["inputs"]["missing"].get(c["name"], 0), "",
                 f"mean {c['mean']:.4g}, std {c['std']:.4g}" + (", missing indicator" if c["indicator"] else "")]
                for c in prep["numeric"]]
        rows += [[c["name"], "categorical", ev["inputs"]["missing"].get(c["name"], 0),
                  ev["inputs"]["unseen"].get(c["name"], 0), f"{len(c['categories'])} categories"]
                 for c in prep["categorical"]]
        body = (f"<p>Fitted on {meta['sizes']['train']} training rows; counts over the {ev['n']} evaluated rows.</p>"
                + table(["feature", "type", "missing", "unseen", "preprocessing"], rows))
        return [*sections, Section("Inputs", body)]


def _parse(text: str | bytes, i: int) -> dict[str, Any]:
    try:
        row = json.loads(text)
    except ValueError:
        row = None
    if not isinstance(row, dict):
        raise DlforgeError(f"item {i}: expected a row as a dict (or its JSON object) of column values")
    return row


def _targets(data: Table, label: str, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(data.frame[label]) - set(index))
    if unknown:
        raise DataError(f"{data.source}: labels {unknown} are not among the model's {classes}")
    return np.array([index[v] for v in data.frame[label]], dtype=np.int64)
