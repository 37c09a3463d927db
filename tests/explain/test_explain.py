"""Explanations of every kind of input through one function, their files, and the command line."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

import dlforge
from dlforge.cli import app
from dlforge.errors import DlforgeError
from dlforge.explain import explain, explain_json, methods, write, write_summary


@pytest.fixture
def invoke() -> Iterator[Callable[..., Result]]:
    """The CLI in this process; the log handler it installs (on the runner's stream, closed after) is taken back."""
    log = logging.getLogger("dlforge")
    handlers, level = list(log.handlers), log.level
    yield lambda *args: CliRunner().invoke(app, ["explain", *map(str, args)])
    log.handlers[:], log.level = handlers, level


def digit_png(run: dlforge.Run, path: Path) -> Path:
    predictor = dlforge.load(run.path)
    pixels = np.asarray(predictor.evaluation_data()[0][0])  # (8, 8, 1) uint8
    Image.fromarray(pixels[..., 0]).save(path)
    return path


def test_cli_writes_a_png_and_its_json(trained_run: dlforge.Run, tmp_path: Path,
                                      invoke: Callable[..., Result]) -> None:
    image = digit_png(trained_run, tmp_path / "digit.png")
    result = invoke(trained_run.path, image, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "digit" in result.stdout and "wrote 2 files" in result.stdout
    with Image.open(tmp_path / "out" / "digit.ig.png") as picture:
        picture.load()
        assert picture.size[0] > 100
    doc = json.loads((tmp_path / "out" / "digit.ig.json").read_text())
    assert doc["method"] == "ig" and doc["picture"] == "digit.ig.png" and doc["kind"] == "image"
    assert doc["target"]["class"] == doc["prediction"]["label"]  # by default, the predicted class
    assert doc["attributions"][0]["shape"] == [8, 8] and len(doc["attributions"][0]["values"]) == 8
    assert doc["checks"]["completeness"]["relative_error"] < 0.01
    assert set(doc["checks"]["deletion"]) >= {"auc", "random_auc", "fractions", "scores", "random_scores"}
    checks = json.loads((trained_run.path / "explanations" / "checks.json").read_text())["checks"]
    ig = next(c for c in checks if c["method"] == "ig")
    assert ig["inputs"] == 1 and ig["completeness_error_max"] == doc["checks"]["completeness"]["relative_error"]
    assert "- ig: inputs 1" in (trained_run.path / "card.md").read_text()  # the model card shows the checks


@pytest.mark.parametrize(("args", "says"), [
    (["--method", "shap"], ["method 'shap'", "image", "ig, gradcam, saliency, occlusion, lime"]),
    (["--target", "eleven"], ["target 'eleven'", "classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"]),
    (["--box", "0"], ["box", "classifies"]),
])
def test_cli_names_what_does_not_fit(trained_run: dlforge.Run, tmp_path: Path, args: list[str], says: list[str],
                                     invoke: Callable[..., Result]) -> None:
    image = digit_png(trained_run, tmp_path / "digit.png")
    result = invoke(trained_run.path, image, "--out", tmp_path, *args)
    assert result.exit_code == 2
    assert all(s in " ".join(result.output.split()) for s in says), result.output
    assert not list(tmp_path.glob("*.json"))


def test_cli_names_a_missing_input(trained_run: dlforge.Run, tmp_path: Path, invoke: Callable[..., Result]) -> None:
    result = invoke(trained_run.path, tmp_path / "nope.png")
    assert result.exit_code == 2 and "nope.png: no such input file" in result.output


def test_json_for_the_server(trained_run: dlforge.Run, sentiment_run: Path) -> None:
    """What `POST /explain` answers: JSON with the picture inside (a PNG in base64, or HTML for texts)."""
    digits = dlforge.load(trained_run.path)
    (image,) = explain_json(digits, digits.evaluation_data()[0][:1], method="gradcam", target="3")
    assert json.loads(json.dumps(image))["target"]["class"] == "3"
    assert "completeness" not in image["checks"]  # IG's alone
    Image.open(io.BytesIO(base64.b64decode(image["picture"]["base64"]))).verify()
    (text,) = explain_json(dlforge.load(sentiment_run), ["a dull and tedious film"], method="lime")
    assert text["picture"]["format"] == "html" and ">dull</span>" in text["picture"]["html"]
    tokens = text["attributions"][0]
    assert tokens["name"] == "input_ids" and tokens["labels"][:3] == ["[CLS]", "a", "dull"]


def test_forecast_attributions_over_the_lookback_window(tiny_runs: Callable[[str], Path], tmp_path: Path) -> None:
    predictor = dlforge.load(tiny_runs("forecasting"))
    items = predictor.evaluation_data()[0][:1]
    assert methods(predictor) == ("ig", "saliency", "occlusion")
    (e,) = explain(predictor, items, target="p90")
    assert e.target["quantile"] == "p90"
    past, future = e.to_dict()["attributions"]
    assert past["name"] == "past" and past["shape"][0] == 24 and past["labels"][:3] == ["sales", "temp", "promo"]
    assert "region=north" in past["labels"] and future["shape"][0] == 6 and "promo" in future["labels"]
    assert abs(e.checks["completeness"]["relative_error"]) < 0.05  # the sorted quantiles bend the path
    (png, _) = write([e], tmp_path, ["series"])
    Image.open(png).verify()
    with pytest.raises(DlforgeError, match="p10, p50, p90"):
        explain(predictor, items, target="p99")


def test_grad_cam_for_a_chosen_box(tiny_runs: Callable[[str], Path], tmp_path: Path) -> None:
    predictor = dlforge.load(tiny_runs("object_detection"))
    items = predictor.evaluation_data()[0][:1]
    found = predictor.predict(items, conf=0.0)[0]["objects"]
    assert methods(predictor)[0] == "gradcam"  # the detection task's default
    (e,) = explain(predictor, items, box=1, options={"conf": 0.0})
    assert e.method == "gradcam" and e.target["box"] == found[1]["box"] and e.target["label"] == found[1]["label"]
    assert e.units[0].shape == (64, 64) and e.score == pytest.approx(found[1]["score"], abs=1e-3)
    (png, _) = write([e], tmp_path, ["shapes"])
    Image.open(png).verify()
    with pytest.raises(DlforgeError, match="box 9999"):
        explain(predictor, items, box=9999, options={"conf": 0.0})


def test_table_rows_by_shap_and_integrated_gradients(tiny_runs: Callable[[str], Path], tmp_path: Path) -> None:
    predictor = dlforge.load(tiny_runs("tabular_classification"))
    rows = predictor.evaluation_data()[0][:4]
    assert methods(predictor) == ("shap", "ig")
    shap = explain(predictor, rows, background=rows)
    logits = predictor.outputs(rows)
    for e in shap:
        values = {label: v for a in e.to_dict()["attributions"] for label, v in
                  zip(a["labels"], a["values"] if a["shape"] else [a["values"]], strict=True)}
        assert set(values) == {"x", "count", "x (missing)", "color"} and values["x (missing)"] == 0.0
        # SHAP values add up to the score less its mean over the background (the class's log-odds)
        k = predictor.classes.index(e.target["class"])
        others = logits[:, [j for j in range(logits.shape[1]) if j != k]]
        expected = float((logits[:, k] - others.logsumexp(dim=1)).mean())
        assert sum(values.values()) == pytest.approx(e.score - expected, abs=1e-4)
    written = write(shap, tmp_path, [f"row-{i}" for i in range(4)]) + write_summary(shap, tmp_path)
    assert (tmp_path / "summary.png").exists() and len(written) == 10
    assert set(json.loads((tmp_path / "summary.json").read_text())["mean_abs_attribution"]) >= {"x", "color"}
    for e in explain(predictor, rows, "ig"):
        assert e.checks["completeness"]["relative_error"] <= 0.01
        assert [p.name for p in e.parts] == ["numeric", "categorical/color"]
