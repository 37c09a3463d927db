"""Evaluate a finished run on its test split or on new data, through its Predictor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dlforge._io import atomic_write_json
from dlforge.errors import DlforgeError
from dlforge.predictor import Predictor
from dlforge.run import Run


def evaluate_run(run_dir: str | os.PathLike, data: str | None = None, out: str | os.PathLike | None = None,
                 device: str = "cpu") -> tuple[dict[str, Any], Path]:
    """Metrics and figures for `data` (default: the run's own test split); returns (result, out dir).

    Without `data` the run's eval.json and plots/ are rewritten; with it, they go to `out`
    (default `<run>/evaluations/<data name>/`), so the test evaluation is never overwritten.
    """
    run = Run.open(run_dir)
    predictor = Predictor.from_run(run, device=device)
    items, targets = predictor.evaluation_data(data)
    if targets is None:
        raise DlforgeError(f"{data}: no labels to evaluate against (predict or monitor unlabelled data)")
    if out is None:
        out = run.path if data is None else run.path / "evaluations" / Path(data.rstrip("/")).stem.replace(":", "_")
    out = Path(out)
    result = {"data": data or "test split", **predictor.evaluate(items, targets, out / "plots")}
    atomic_write_json(out / "eval.json", result)
    return result, out
