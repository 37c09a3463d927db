"""The contract every registered task keeps. Its own example spec (`Task.example_spec`) trains for an epoch on data
that needs no download; the finished run reloads, predicts its own test items, answers the same for the JSON the
server decodes with the task's wire, and does what its capabilities (`dlforge.tasks.capabilities`) say it does: an
ONNX export that matches torch, a drift profile, an explanation. What a task cannot do fails with a DlforgeError that
says so. The test runs over `TASKS.names()`: a task that registers itself is tested without a change here."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import dlforge
from dlforge.drift.profile import read_profile
from dlforge.errors import DlforgeError
from dlforge.explain import explain, methods
from dlforge.export import export_run
from dlforge.registry import TASKS
from dlforge.tasks.base import Task
from dlforge.tasks.capabilities import Explainable, Exportable, Profiled
from tests.serve.conftest import ThreadServer, assert_same_predictions

ITEMS = 4  # of each run's test split: predicted, sent through the wire, exported and explained


def test_every_task_has_an_example_spec_that_validates(tmp_path: Path) -> None:
    assert len(TASKS.names()) >= 7
    for name in TASKS.names():
        task = TASKS.get(name)
        assert task.example_spec.__func__ is not Task.example_spec.__func__, f"{name} has no example_spec"
        spec = dlforge.validate_spec(task.example_spec(tmp_path / name))
        assert spec.task == name and spec.train.epochs == 1
    with pytest.raises(NotImplementedError, match="every task must define one"):
        Task.example_spec(tmp_path)


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_trains_serves_and_does_what_it_declares(tiny_runs: Callable[[str], Path], name: str) -> None:
    run = tiny_runs(name)  # the task's example spec, trained for one epoch (once for the session)
    assert (run / "COMPLETE").is_file() and (run / "model.safetensors").is_file()

    # reloaded, it predicts its own test items as the server's wire carries them (JSON instances, decoded)
    predictor = dlforge.load(run)
    assert predictor.spec.task == name and predictor.backend == "torch"
    evaluation, _ = predictor.evaluation_data()
    assert len(evaluation) >= 2
    wire, limits = predictor.wire, predictor.spec.serve.limits
    instances = [json.loads(json.dumps(wire.encode(item))) for item in list(evaluation)[:ITEMS]]
    items = [wire.decode(value, f"instances[{i}]", limits) for i, value in enumerate(instances)]
    offline = predictor.predict(items)
    assert len(offline) == len(items) and all(isinstance(p, dict) and p for p in offline)
    offline = json.loads(json.dumps(offline))  # JSON-able
    example = wire.decode(wire.example(predictor.meta), "instances[0]", limits)  # the example the API docs show
    (answer,) = predictor.predict([example])
    assert answer.keys() == offline[0].keys()

    # a real server (in this process) answers the instances as the offline Predictor does
    with ThreadServer(run) as server, server.client() as client:
        response = client.post("/predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        assert_same_predictions(response.json()["predictions"], offline, tol=1e-4)

    # exported to ONNX, checked against torch by the export itself, and predicting as torch does; or refused
    if predictor.can(Exportable):
        by_onnx = dlforge.load(run, backend="onnx")  # exports (export_run) unless an export of these weights exists
        sidecar = json.loads((run / "export" / "model.onnx.json").read_text())  # what export_run found and wrote
        assert sidecar["format"] == "onnx" and sidecar["task"] == name and sidecar["max_abs_diff"] <= 1e-4
        assert (run / "export" / "model.onnx").stat().st_size > 1000
        assert by_onnx.backend == "onnx" and by_onnx.model is None
        assert_same_predictions(by_onnx.predict(items), offline, tol=1e-4)
    else:
        with pytest.raises(DlforgeError, match=f"{name} models cannot be exported"):
            export_run(run, "onnx")
        with pytest.raises(DlforgeError, match="cannot be exported"):
            dlforge.load(run, backend="onnx")
        assert not (run / "export" / "model.onnx").exists()

    # a drift reference profile, written at training: inputs and predictions of the test items; or none
    if predictor.can(Profiled):
        profile, reference = read_profile(run)
        assert (run / "profile" / "profile.json").is_file() and profile
        assert len(reference) >= len(items)
        assert any(c.startswith("prediction_") for c in reference.columns)
        assert any(not c.startswith("prediction_") for c in reference.columns)
    else:
        assert not (run / "profile" / "profile.json").exists()
        with pytest.raises(DlforgeError, match="no reference profile"):
            read_profile(run)

    # one input explained by the task's default method; or refused
    if predictor.can(Explainable):
        (explanation,) = explain(predictor, items[:1], checks=False)  # (the checks: tests/explain)
        assert explanation.method == methods(predictor)[0]
        assert explanation.units and all(u.size and np.isfinite(u).all() for u in explanation.units)
        assert np.isfinite(explanation.score)
        assert_same_predictions(explanation.prediction, offline[0], tol=1e-4)
        json.dumps(explanation.to_dict())
    else:
        with pytest.raises(DlforgeError, match=f"{name} models cannot be explained"):
            explain(predictor, items[:1])
