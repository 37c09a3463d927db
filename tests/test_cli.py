"""The command line end to end, as a user types it: train, runs, predict, evaluate, report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tests.conftest import cli, digits_spec, write_digit_folder, write_spec


def test_train_predict_evaluate_report(tmp_path: Path) -> None:
    folder = write_digit_folder(tmp_path / "images", [3, 5, 8], per_class=40, size=12)
    spec = digits_spec(epochs=4)
    spec["data"] = {"source": "images", "split": {"val": 0.2, "test": 0.2, "seed": 0}}
    path = write_spec(tmp_path / "spec.yaml", spec)

    proc = cli("train", path, "--runs-dir", tmp_path / "runs", "--set", "train.epochs=3", check=True)
    assert "test accuracy" in proc.stdout and "report:" in proc.stdout
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name.startswith("digits-test-")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3  # the --set took effect

    listing = cli("runs", tmp_path / "runs", check=True).stdout
    assert run.name[:20] in listing and "complete" in listing and "accuracy" in listing

    files = sorted((folder / "5").glob("*.png"))[:2]
    predictions = json.loads(cli("predict", run, *files, check=True).stdout)
    assert [p["input"] for p in predictions] == [str(f) for f in files]
    assert all(p["label"] in {"3", "5", "8"} for p in predictions)

    # Evaluate on a labelled CSV of new data: results go beside the run's own evaluation.
    rows = [(str(p), p.parent.name) for p in sorted(folder.rglob("*.png"))]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(tmp_path / "new.csv", index=False)
    proc = cli("evaluate", run, "--data", tmp_path / "new.csv", check=True)
    out = run / "evaluations" / "new"
    result = json.loads((out / "eval.json").read_text())
    assert result["n"] == 120 and result["data"].endswith("new.csv")
    assert 0.0 <= result["metrics"]["ece"] <= 1.0
    assert len(result["confusion_matrix"]) == 3 and sum(map(sum, result["confusion_matrix"])) == 120
    assert (out / "plots" / "confusion_matrix.png").stat().st_size > 1000
    assert json.loads((run / "eval.json").read_text())["data"] == "test split"  # not overwritten

    (run / "report.html").unlink()
    assert "report.html" in cli("report", run, check=True).stdout
    assert (run / "report.html").stat().st_size > 10_000


def test_data_errors_exit_2_naming_the_file(tmp_path: Path) -> None:
    folder = write_digit_folder(tmp_path / "images", [1, 2], per_class=5)
    (folder / "2" / "bad.png").write_bytes(b"garbage")
    spec = digits_spec()
    spec["data"] = {"source": str(folder)}
    proc = cli("train", write_spec(tmp_path / "spec.yaml", spec), "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2
    assert "bad.png: cannot read image" in proc.stderr and "Traceback" not in proc.stderr
    (run,) = list((tmp_path / "runs").iterdir())  # the run that failed says so, and is not complete
    assert (run / "FAILED").exists() and not (run / "COMPLETE").exists()
    assert "failed" in cli("runs", tmp_path / "runs").stdout
