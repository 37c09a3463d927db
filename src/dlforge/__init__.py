"""dlforge: one YAML spec and one CLI take a model from a dataset to a service people can trust.

    import dlforge
    spec = dlforge.load_spec("spec.yaml")
    run = dlforge.train(spec)
    predictor = dlforge.load(run.path)
    predictor.predict(["a.png"])
"""

from dlforge import tasks as _tasks  # noqa: F401  (registers every task)
from dlforge.errors import DataError, DlforgeError, RunError, SpecError
from dlforge.evaluate import evaluate_run
from dlforge.predictor import Predictor, load
from dlforge.run import Run, list_runs
from dlforge.spec import load_spec, validate_spec
from dlforge.train.fit import train

__all__ = ["DataError", "DlforgeError", "Predictor", "Run", "RunError", "SpecError", "evaluate_run", "list_runs",
           "load", "load_spec", "train", "validate_spec"]
