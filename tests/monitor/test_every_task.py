"""Every task gets a reference profile at training, and `dlforge monitor` compares new data with it: dense tasks
by their input statistics and predictions, forecasting by its series' values."""

from __future__ import annotations

import pytest

from dlforge.drift.profile import read_profile
from dlforge.monitor.commands import monitor_run
from dlforge.run import Run
from tests.tasks.test_forecasting import monthly_table


@pytest.mark.parametrize("name", ["semantic_segmentation", "object_detection"])
def test_dense_tasks_compare_inputs_and_predictions(name, tiny_runs, tmp_path):
    run = tiny_runs(name)
    profile, reference = read_profile(run)
    assert profile["pca"] is None  # no layer sees one vector per image: no embedding drift, and it says so
    assert {"brightness", "sharpness"} <= set(reference.columns)
    assert any(c.startswith("prediction_") for c in reference.columns)
    result, folder = monitor_run(run, data=str(Run.open(run).read_spec().data.source), out=tmp_path / "m")
    assert result["embeddings"] is None and not result["drifted"]
    assert "none (the model has no layer" in (folder / "drift.html").read_text()


def test_forecasting_names_the_shifted_covariate(tiny_runs, tmp_path):
    run = tiny_runs("forecasting")
    profile, reference = read_profile(run)
    assert {"sales", "temp", "promo", "sales_std", "prediction_p50"} <= set(reference.columns)
    assert profile["columns"]["temp"]["type"] == "numeric" and len(profile["columns"]["temp"]["histogram"]["counts"])
    table = monthly_table()
    table.to_csv(tmp_path / "same.csv", index=False)
    same, _ = monitor_run(run, data=str(tmp_path / "same.csv"), out=tmp_path / "same")
    assert same["inputs"]["drifted_columns"] == []
    table["temp"] += 3.0  # a warmer world: about 0.8 of temp's std
    table.to_csv(tmp_path / "warmer.csv", index=False)
    warmer, _ = monitor_run(run, data=str(tmp_path / "warmer.csv"), out=tmp_path / "warmer")
    assert "temp" in warmer["inputs"]["drifted_columns"]
    assert not {"sales", "promo"} & set(warmer["inputs"]["drifted_columns"])


def test_predictions_become_columns_whatever_their_shape():
    from dlforge.drift.profile import prediction_columns

    predictions = [{"objects": [], "quantiles": [], "pixels": {"sky": 0.5}, "label": "a", "confidence": 0.9},
                   {"objects": [{"box": [0, 0, 1, 1], "score": 0.8}], "quantiles": [1.0, 3.0], "pixels": {},
                    "label": "b", "confidence": 0.6}]
    columns = prediction_columns(predictions)
    assert columns["objects_count"] == [0, 1]  # an empty first list does not make a list of objects numeric
    assert columns["quantiles"][1] == 2.0 and columns["quantiles"][0] != columns["quantiles"][0]  # NaN: empty
    assert columns["pixels.sky"] == [0.5, 0.0] and columns["label"] == ["a", "b"]
