"""dlforge: one YAML spec and one CLI take a model from a dataset to a service people can trust.

    import dlforge
    spec = dlforge.load_spec("spec.yaml")
    run = dlforge.train(spec)
    predictor = dlforge.load(run.path)
    predictor.predict(["a.png"])
"""

from __future__ import annotations

import os

from dlforge import tasks as _tasks  # noqa: F401  (registers every task)
from dlforge.errors import DataError, DlforgeError, RunError, SpecError
from dlforge.evaluate import evaluate_run
from dlforge.pipeline import train
from dlforge.predictor import Backend, Predictor
from dlforge.run import Run, list_runs
from dlforge.spec import load_spec, validate_spec

__all__ = ["DataError", "DlforgeError", "Predictor", "Run", "RunError", "SpecError", "evaluate_run", "list_runs",
           "load", "load_spec", "train", "validate_spec"]


def load(run_dir: str | os.PathLike, device: str = "cpu", backend: Backend = "torch") -> Predictor:
    """The Predictor of a finished run directory; backend "onnx" serves its ONNX export with onnxruntime, exported
    first when the run has none (or one made from other weights)."""
    if backend == "onnx":
        from dlforge.export import ensure_onnx

        ensure_onnx(Run.open(run_dir))
    return Predictor.from_run(run_dir, device=device, backend=backend)
