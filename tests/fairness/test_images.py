"""An image CSV (path, label, other columns) carries its groups beside the images: the audit compares them, aligned
with the images evaluated, with numbers equal to fairlearn's on the same predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from fairlearn.metrics import demographic_parity_difference

import dlforge
from dlforge.fairness import audit_run
from tests.conftest import digits_spec, write_digit_folder


def test_an_image_csv_is_audited_by_its_group_column(tmp_path: Path) -> None:
    folder = write_digit_folder(tmp_path / "digits", [0, 1], per_class=60, size=8, rgb=False)
    files = sorted(folder.rglob("*.png"))
    rows = [{"path": str(f.relative_to(tmp_path)), "label": f.parent.name, "camera": "old" if i % 3 else "new"}
            for i, f in enumerate(files)]
    pd.DataFrame(rows).to_csv(tmp_path / "images.csv", index=False)
    spec = digits_spec(epochs=1)
    spec["data"] = {"source": str(tmp_path / "images.csv"), "split": {"val": 0.2, "test": 0.3, "seed": 0}}
    run = dlforge.train(dlforge.validate_spec(spec), tmp_path / "runs", progress=False).path
    predictor = dlforge.load(run)
    items, targets, columns = predictor.task.audit_data(predictor.meta)
    camera = {str(tmp_path / r["path"]): r["camera"] for r in rows}
    assert list(columns["camera"]) == [camera[str(p)] for p in items]  # aligned with the images evaluated
    result, _ = audit_run(run, "camera", positive="1", n_boot=0, min_group=2)
    assert set(result["model"]["camera"]["by_group"]) == {"old", "new"}
    chosen = np.array([p["label"] == "1" for p in predictor.predict(items)])
    expected = demographic_parity_difference(np.asarray(targets) == 1, chosen, sensitive_features=columns["camera"])
    assert result["model"]["camera"]["summary"]["demographic_parity_difference"] == expected
