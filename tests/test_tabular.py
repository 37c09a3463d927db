"""Tabular classification: builtin:adult, reading CSV/Parquet (bad cells, missing values, unseen categories),
the wire format, prediction on raw rows, serving and export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dlforge
from dlforge.data.examples import table_rows
from dlforge.data.tables import clean, read_table, read_tables
from dlforge.errors import DataError, DlforgeError, InputError
from dlforge.registry import TASKS
from dlforge.spec import LimitsSpec
from tests.conftest import cli, write_csv


def tabular_rows(n: int, seed: int = 0) -> list[dict]:
    """x (numeric, every 10th missing), count (whole numbers), color (categorical), group (kept out of the model),
    label: 'yes' when x plus the color's shift is positive, so the label is learnable (the tabular example's data)."""
    return table_rows(n, seed)


def tabular_spec(source: Path, epochs: int = 1, **data: object) -> dict:
    return {"name": "table-test", "task": "tabular_classification",
            "data": {"source": str(source), "label": "label", "exclude": ["group"],
                     "split": {"val": 0.2, "test": 0.2, "seed": 0}, **data},
            "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
            "train": {"epochs": epochs, "batch_size": 16, "seed": 0}}


def prepare(spec: dict):
    checked = dlforge.validate_spec(spec)
    task = TASKS.get(checked.task)(checked)
    return task, task.prepare()


@pytest.fixture(scope="session")
def adult_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """builtin:adult, one epoch (fnlwgt, a sampling weight, left out)."""
    spec = dlforge.validate_spec({
        "name": "adult-test", "task": "tabular_classification",
        "data": {"source": "builtin:adult", "exclude": ["fnlwgt"], "split": {"val": 0.1, "seed": 0}},
        "model": {"name": "mlp", "kwargs": {"hidden": [64, 32]}},
        "train": {"epochs": 1, "batch_size": 256, "optimizer": {"lr": 0.003}, "seed": 0}})
    return dlforge.train(spec, tmp_path_factory.mktemp("adult"), progress=False).path


# ---------------------------------------------------------------- builtin:adult


def test_builtin_adult_is_both_uci_files() -> None:
    train, test = read_tables("builtin:adult")
    assert (len(train.frame), len(test.frame)) == (32_561, 16_281)
    for table in (train, test):
        assert set(table.frame["income"]) == {"<=50K", ">50K"}  # adult.test's trailing '.' removed
        assert {"sex", "race", "age", "native_country"} <= set(table.frame.columns)
    assert train.frame.loc[0, "workclass"] == "State-gov"  # leading spaces stripped
    assert train.frame["workclass"].isna().sum() == 1836  # '?' is missing
    assert test.where[0].endswith("adult.test:2")  # the junk first line skipped, lines still counted


def test_adult_trains_past_the_majority_class_and_keeps_the_groups(adult_run: Path) -> None:
    ev = json.loads((adult_run / "eval.json").read_text())
    meta = json.loads((adult_run / "meta.json").read_text())
    majority = max(c["support"] for c in ev["per_class"]) / ev["n"]
    assert ev["n"] == 16_281 and meta["sizes"]["test"] == 16_281
    assert majority == pytest.approx(0.764, abs=0.001)
    assert ev["metrics"]["accuracy"] > majority + 0.04, ev["metrics"]
    assert meta["classes"] == ["<=50K", ">50K"]
    # missing values were counted on every split; the unknown index covers them
    assert meta["data"]["missing"]["train"]["occupation"] > 1000
    assert ev["inputs"]["missing"]["workclass"] == 963
    prep = meta["preprocessing"]
    assert "fnlwgt" not in [c["name"] for c in prep["numeric"]]
    assert {c["name"] for c in prep["categorical"]} >= {"sex", "race", "workclass"}
    # the items are whole rows: excluded columns (and the groups a fairness audit reads) stay in them
    items, targets = dlforge.load(adult_run).evaluation_data()
    assert len(items) == len(targets) == 16_281
    assert {"sex", "race", "fnlwgt"} <= set(items[0]) and "income" not in items[0]
    profile = pd.read_parquet(adult_run / "profile" / "reference.parquet")
    assert profile["age"].dtype == np.float64 and profile["sex"].isin(["Male", "Female"]).all()


def test_raw_rows_with_missing_values_and_unseen_categories_are_predicted(adult_run: Path) -> None:
    predictor = dlforge.load(adult_run)
    typical = predictor.wire.example(predictor.meta)
    odd = {**typical, "age": None, "workclass": None, "native_country": "Atlantis", "occupation": "?"}
    predictions = predictor.predict([typical, odd, {**typical, "sex": "Female", "race": "Black"}])
    assert [set(p) for p in predictions] == [{"label", "confidence", "probabilities"}] * 3
    assert all(sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-5) for p in predictions)
    assert predictions[0]["probabilities"] != predictions[1]["probabilities"]
    from dlforge.data.tables import encode

    _, counts = encode([typical, odd], predictor.meta["preprocessing"])
    assert counts == {"missing": {"age": 1, "workclass": 1, "occupation": 1}, "unseen": {"native_country": 1}}
    with pytest.raises(DlforgeError, match="item 0 has no value for feature 'age'"):
        predictor.predict([{k: v for k, v in typical.items() if k != "age"}])


def test_every_missing_feature_is_named_up_to_ten(adult_run: Path) -> None:
    """Two of the 13 features given: the CLI, the Predictor and the server's wire name the 11 missing ones (ten, then
    "and 1 more"), not only the first."""
    named = ("'education_num', 'capital_gain', 'capital_loss', 'hours_per_week', 'education', 'marital_status', "
             "'occupation', 'relationship', 'race', 'sex' and 1 more")
    row = {"age": 52, "workclass": "Private"}
    proc = cli("predict", adult_run, "--text", json.dumps(row))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: item 0 has no value for features {named} (give null for a missing value)" in proc.stderr
    predictor = dlforge.load(adult_run)
    with pytest.raises(DlforgeError, match=f"^item 0 has no value for features {named}"):
        predictor.predict([row])
    with pytest.raises(InputError, match=f"^instances\\[0\\]: missing features {named}: every feature needs") as e:
        predictor.wire.decode(row, "instances[0]", LimitsSpec())
    assert e.value.status == 400


def test_the_mlp_embeds_each_categorical_column() -> None:
    import torch
    from torch import nn

    from dlforge.models.tabular import TabularMLP

    model = TabularMLP(numeric_features=3, cardinalities=[2, 200], num_classes=4, hidden=[8], norm="batch")
    assert [e.embedding_dim for e in model.embeddings] == [2, 50]  # min(50, (rows + 1) // 2), rows = categories + 1
    assert not any(e.weight[0].any() for e in model.embeddings)  # unknown starts at zero
    assert model.train()(torch.randn(1, 3), torch.tensor([[1, 150]])).shape == (1, 4)  # a training batch of one
    assert [m for m in model.modules() if isinstance(m, nn.Linear)][-1] is model.head  # what drift monitoring reads
    assert model.head.in_features == 8


# ---------------------------------------------------------------- reading files


def test_missing_values_get_an_indicator_and_unseen_categories_are_counted(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", tabular_rows(50))
    test_rows = tabular_rows(10, seed=1)
    test_rows[0]["color"], test_rows[1]["color"], test_rows[2]["x"] = "purple", "purple", None
    test = write_csv(tmp_path / "test.csv", test_rows)
    task, prepared = prepare(tabular_spec(train, test_source=str(test)))
    meta = prepared.meta
    prep = meta["preprocessing"]
    numeric = {c["name"]: c for c in prep["numeric"]}
    assert list(numeric) == ["x", "count"] and [c["name"] for c in prep["categorical"]] == ["color"]
    assert numeric["x"]["indicator"] and not numeric["count"]["indicator"] and numeric["count"]["integer"]
    assert prep["categorical"][0]["categories"] == ["blue", "green", "red"]
    assert meta["sizes"] == {"train": 40, "val": 10, "test": 10}  # the test file is the test split
    assert sum(meta["data"]["missing"][s].get("x", 0) for s in ("train", "val")) == 5
    assert meta["data"]["unseen"]["test"] == {"color": 2}
    assert meta["data"]["missing"]["test"]["x"] >= 2
    inputs, _ = prepared.train[0]
    assert inputs["numeric"].shape == (3,) and inputs["categorical"].shape == (1,)  # x, count, x-missing; color
    mean = numeric["x"]["mean"]
    batch = task.preprocess([{"x": None, "count": 2, "color": "purple"}, {"x": mean, "count": 2, "color": "red"}],
                            meta)
    assert batch["numeric"][:, 0].tolist() == pytest.approx([0.0, 0.0], abs=1e-6)  # missing -> the mean
    assert batch["numeric"][:, 2].tolist() == [1.0, 0.0]  # the indicator
    assert batch["categorical"][:, 0].tolist() == [0, 3]  # unseen -> 0; red is the 3rd category
    items, _ = prepared.test
    assert items[0]["group"] in ("a", "b")  # excluded from the model, kept in the item


def test_a_bad_number_names_file_line_and_column(tmp_path: Path) -> None:
    rows = tabular_rows(40)
    rows[4]["x"] = "abc"  # the 5th data row: line 6 (line 1 is the header)
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=rf"{path}:6: column 'x': 'abc' is not a number .*data.on_error: skip"):
        prepare(tabular_spec(path))
    _, prepared = prepare(tabular_spec(path, on_error="skip"))
    assert prepared.meta["data"]["dropped"] == {"bad_number": 1} and prepared.meta["data"]["rows"] == 40
    assert sum(prepared.meta["sizes"].values()) == 39
    # a column named categorical is read as categories: 'abc' is then just a category
    _, prepared = prepare(tabular_spec(path, categorical=["x", "color"]))
    assert [c["name"] for c in prepared.meta["preprocessing"]["numeric"]] == ["count"]
    rows[4]["x"], rows[7]["label"] = 0.5, None
    path = write_csv(tmp_path / "nolabel.csv", rows)
    with pytest.raises(DataError, match=rf"{path}:9: column 'label': the label is missing"):
        prepare(tabular_spec(path))


def test_column_names_are_checked(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", tabular_rows(20))
    with pytest.raises(DataError, match=r"no column 'grup' \(data.exclude\) \(did you mean 'group'\?\)"):
        prepare(tabular_spec(path, exclude=["grup"]))
    with pytest.raises(DataError, match=r"no column 'lable' \(data.label\)"):
        prepare(tabular_spec(path, label="lable"))
    with pytest.raises(DataError, match=r"data.categorical: \['group'\] are not features"):
        prepare(tabular_spec(path, categorical=["group"]))
    with pytest.raises(DataError, match="name the column to predict"):
        prepare(tabular_spec(path, label=None))


def test_missing_columns_of_the_data_are_all_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", tabular_rows(20))
    features = ["x", "count", *(f"f{i}" for i in range(12))]
    with pytest.raises(DataError, match=rf"^{path}: no columns 'f0', 'f1', .*, 'f9' and 2 more \(data.features\); "
                                        "columns: x, count, color, group, label$"):
        prepare(tabular_spec(path, features=features))
    table = read_table(str(path))
    with pytest.raises(DataError, match=rf"^{path}: no columns 'size', 'shape'; the model needs columns label, x, "):
        clean(table, "label", ["x", "size"], ["color", "shape"], "error")


def test_a_quick_run_draws_its_rows_before_the_split(tmp_path: Path) -> None:
    """data.limit / data.fraction: that many rows of the source, seeded and stratified by label, then split; a
    separate test file stays whole."""
    rows = tabular_rows(200)
    path = write_csv(tmp_path / "t.csv", rows)
    share = sum(r["label"] == "yes" for r in rows) / len(rows)
    _, prepared = prepare(tabular_spec(path, limit=50))
    assert prepared.meta["sizes"] == {"train": 30, "val": 10, "test": 10}
    labels = [*prepared.train.targets.tolist(), *prepared.val.targets.tolist(), *prepared.test[1].tolist()]
    assert abs(sum(labels) - share * 50) <= 1  # 'yes' is class 1: the subset keeps the label's share
    _, again = prepare(tabular_spec(path, limit=50))
    assert again.test[0] == prepared.test[0]  # seeded: the same rows
    _, other = prepare(tabular_spec(path, limit=50, split={"val": 0.2, "test": 0.2, "seed": 1}))
    assert other.test[0] != prepared.test[0]
    _, half = prepare(tabular_spec(path, fraction=0.5))
    assert sum(half.meta["sizes"].values()) == 100
    test = write_csv(tmp_path / "test.csv", tabular_rows(30, seed=1))
    _, held = prepare(tabular_spec(path, limit=50, test_source=str(test)))
    assert held.meta["sizes"] == {"train": 40, "val": 10, "test": 30}


def test_parquet_reads_like_csv(tmp_path: Path) -> None:
    rows = tabular_rows(30)
    csv = write_csv(tmp_path / "t.csv", rows)
    parquet = tmp_path / "t.parquet"
    pd.DataFrame(rows).to_parquet(parquet)
    from_csv, from_parquet = read_table(str(csv)), read_table(str(parquet))
    assert from_parquet.where[3] == f"{parquet} row 3"
    _, a = prepare(tabular_spec(csv))
    _, b = prepare(tabular_spec(parquet))
    assert a.meta["preprocessing"] == b.meta["preprocessing"]
    assert from_csv.frame["x"].isna().sum() == from_parquet.frame["x"].isna().sum() == 3


# ---------------------------------------------------------------- the wire, serving, export (the tiny run)


def test_the_wire_decodes_rows_and_refuses_bad_ones(tiny_runs) -> None:
    predictor = dlforge.load(tiny_runs("tabular_classification"))
    wire, meta, limits = predictor.wire, predictor.meta, LimitsSpec()
    assert wire.kind == "table"
    example = wire.example(meta)
    assert set(example) == {"x", "count", "color"} and isinstance(example["count"], int)
    assert wire.decode(json.dumps(example), "i", limits) == example  # KServe V2 BYTES: the JSON of the object
    row = {"x": None, "count": 3, "color": "mauve", "group": "a"}  # null, a number, unseen, excluded column
    assert wire.decode(row, "i", limits) == row
    assert predictor.predict([row])[0]["label"] in meta["classes"]
    bad = [({"count": 1, "color": "red"}, "i.x", "missing"),
           ({**example, "colour": "red"}, "i.colour", "did you mean 'color'"),
           ({**example, "x": "abc"}, "i.x", "'abc' is not a number"),
           ({**example, "x": "3"}, "i.x", "'3' is not a number"),  # null is the one missing value: no "NaN", no "?"
           ({**example, "x": math.nan}, "i.x", "nan is not a JSON value"),
           ({**example, "x": True}, "i.x", "a boolean is not a number"),
           ({**example, "color": ["red"]}, "i.color", "expected a single value"),
           ([1, 2], "i", "expected an object of column values")]
    for value, field, message in bad:
        with pytest.raises(InputError, match=message) as e:
            wire.decode(value, "i", limits)
        assert e.value.field == field
    schema = wire.schema(meta)
    assert schema["required"] == ["x", "count", "color"] and "group" in schema["properties"]
    # any category is accepted (an unseen one as unknown): the training ones are examples, not an enum
    assert schema["properties"]["color"]["examples"] == ["blue", "green", "red"]
    assert "enum" not in schema["properties"]["color"] and "null" in schema["properties"]["color"]["type"]
    import jsonschema

    jsonschema.validate(example, schema)
    stats = wire.statistics([example, row], meta)
    assert list(stats.columns) == ["x", "count", "color", "missing_values", "unseen_categories"]
    assert stats["count"].dtype == np.float64 and math.isnan(stats["x"][1]) and stats["color"][1] == "mauve"
    assert stats["missing_values"].tolist() == [0, 1] and stats["unseen_categories"].tolist() == [0, 1]
    assert wire.encode({"x": np.float64("nan"), "count": np.int64(2)}) == {"x": None, "count": 2}


def test_onnx_export_predicts_as_torch(tiny_runs) -> None:
    run = tiny_runs("tabular_classification")
    torch_predictor = dlforge.load(run)
    items = list(torch_predictor.evaluation_data()[0])
    onnx_predictor = dlforge.load(run, backend="onnx")
    for a, b in zip(onnx_predictor.predict(items), torch_predictor.predict(items), strict=True):
        assert a["label"] == b["label"] and a["confidence"] == pytest.approx(b["confidence"], abs=1e-5)


def test_unlabelled_rows_are_monitored_and_a_shifted_column_is_named(adult_run: Path, tmp_path: Path) -> None:
    """Production rows carry no label: monitor reads them, and names the shifted column; evaluate refuses."""
    from dlforge.evaluate import evaluate_run
    from dlforge.monitor.commands import monitor_run

    _, test = read_tables("builtin:adult")
    rows = test.frame.drop(columns=["income"]).sample(1500, random_state=0)
    rows.to_csv(tmp_path / "today.csv", index=False)
    calm, _ = monitor_run(adult_run, data=str(tmp_path / "today.csv"), out=tmp_path / "calm")
    assert not calm["drifted"] and "age" not in calm["inputs"]["drifted_columns"]
    rows.assign(age=pd.to_numeric(rows["age"]) + 15).to_csv(tmp_path / "older.csv", index=False)
    older, _ = monitor_run(adult_run, data=str(tmp_path / "older.csv"), out=tmp_path / "older")
    assert "age" in older["inputs"]["drifted_columns"] and "education" not in older["inputs"]["drifted_columns"]
    with pytest.raises(DlforgeError, match="no labels to evaluate against"):
        evaluate_run(adult_run, data=str(tmp_path / "today.csv"))
