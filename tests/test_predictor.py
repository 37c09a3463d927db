"""The Predictor: loads finished runs only; paths, PIL images and arrays give the same answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dlforge
from dlforge.data.images import read_image_set
from dlforge.errors import RunError


def test_paths_pil_and_arrays_agree(trained_run: dlforge.Run, tmp_path: Path) -> None:
    digits = read_image_set("builtin:digits")
    arrays = digits.images[:12, :, :, 0]  # (12, 8, 8) uint8
    paths = []
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    predictor = dlforge.load(trained_run.path)
    by_array = predictor.predict(arrays)
    by_path = predictor.predict([str(p) for p in paths])
    by_pil = predictor.predict([Image.open(p).convert("RGB") for p in paths])  # RGB is made grayscale
    by_float = predictor.predict([a / 255.0 for a in arrays])
    assert by_array == by_path == by_pil == by_float
    for p in by_array:
        assert set(p) == {"label", "confidence", "probabilities"}
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert p["confidence"] == pytest.approx(p["probabilities"][p["label"]], abs=1e-6)
    json.dumps(by_array)  # JSON-able


def test_predictions_match_the_recorded_evaluation(trained_run: dlforge.Run) -> None:
    predictor = dlforge.load(trained_run.path)
    items, targets = predictor.evaluation_data()
    predicted = [p["label"] for p in predictor.predict(items)]
    accuracy = np.mean([p == predictor.classes[t] for p, t in zip(predicted, targets, strict=True)])
    assert accuracy == pytest.approx(trained_run.read_eval()["metrics"]["accuracy"], abs=1e-6)


def test_incomplete_runs_are_never_loaded(trained_run: dlforge.Run, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(trained_run.path, tmp_path / "copy"))
    (copy / "COMPLETE").unlink()
    with pytest.raises(RunError, match=r"did not finish.*dlforge train --resume"):
        dlforge.load(copy)
    with pytest.raises(RunError, match="not a dlforge run directory"):
        dlforge.load(tmp_path)
