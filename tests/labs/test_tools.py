"""The labs' tools on real specs and runs: `dlforge lr-find`, `dlforge diagnose --sharpness`, `train.label_smoothing`
in every classification task, and the before/after-temperature reliability diagram in a classifier's report."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

import dlforge
from dlforge.cli import app
from dlforge.errors import SpecError
from dlforge.labs.sharpness import training_sample
from dlforge.registry import TASKS
from tests.conftest import digits_spec, write_spec

runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small models on a shared 2-core machine: a second thread only waits on the first (see vanishing-gradients)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- dlforge lr-find


def test_lr_find_on_a_spec(tmp_path: Path) -> None:
    spec = digits_spec()
    spec["model"]["kwargs"]["width"] = 8
    path = write_spec(tmp_path / "digits.yaml", spec)
    result = runner.invoke(app, ["lr-find", str(path), "--out", str(tmp_path / "lr"), "--steps", "60",
                                 "--start", "1e-5", "--end", "10", "--set", "train.batch_size=32"])
    assert result.exit_code == 0, result.output
    assert "suggested" in result.output and "--set train.optimizer.lr=" in result.output
    found = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert found["batch_size"] == 32  # the --set override reached the spec
    curve = found["curve"]
    # one rate per optimizer step, growing geometrically from --start
    np.testing.assert_allclose(curve["lr"], np.geomspace(1e-5, 10, 60)[: found["steps_taken"]], rtol=1e-12)
    assert found["stopped"] == "diverged" or found["steps_taken"] == 60
    assert 1e-5 < found["lr"] < found["min_loss_lr"] <= 10 and found["onecycle_max_lr"] == found["min_loss_lr"] / 10
    assert min(curve["smoothed"]) < 0.8 * curve["smoothed"][0]  # the loss fell over the useful range
    with Image.open(tmp_path / "lr" / "lr_find.png") as image:
        assert image.format == "PNG"


def test_lr_find_rejects_a_bad_range(tmp_path: Path) -> None:
    path = write_spec(tmp_path / "digits.yaml", digits_spec())
    result = runner.invoke(app, ["lr-find", str(path), "--start", "1", "--end", "0.1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "0 < start < end" in result.output


# ---------------------------------------------------------------- dlforge diagnose --sharpness


def test_diagnose_sharpness(trained_run: dlforge.Run, tmp_path: Path) -> None:
    run = Path(shutil.copytree(trained_run.path, tmp_path / "run"))  # the shared run stays as other tests read it
    result = runner.invoke(app, ["diagnose", str(run), "--sharpness", "--examples", "96", "--top", "3"])
    assert result.exit_code == 0, result.output
    s = json.loads((run / "diagnostics" / "sharpness.json").read_text())
    values = s["eigenvalues"]
    assert len(values) == 3 and values == sorted(values, reverse=True) and values[0] > 0
    lrs = [row["lr"] for row in dlforge.Run(run).read_metrics()]
    assert s["lr"] == lrs[-1] and s["peak_lr"] == max(lrs) and s["examples"] == 96
    if s["threshold"] is not None:
        assert s["ratio"] == pytest.approx(values[0] * s["lr"] / 2)  # adamw: plain GD's 2/η
    assert s["verdict"] in result.output
    html = (run / "report.html").read_text()
    assert ">Sharpness</h2>" in html and 'alt="Sharpness: top Hessian eigenvalues' in html
    with Image.open(run / "plots" / "sharpness.png") as image:
        assert image.format == "PNG"

    # λ_max again, by power iteration on Hessian-vector products from plain double backward (torch.autograd,
    # not torch.func), on the same sample of training examples.
    predictor = dlforge.Predictor.from_run(run)
    model = predictor.model.eval()
    task, batch, _ = training_sample(predictor.spec, run, 96, seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(task.step(model, batch)[0], params, create_graph=True)
    v = [torch.randn_like(p) for p in params]
    for _ in range(60):
        norm = torch.sqrt(sum((x * x).sum() for x in v))
        v = [x / norm for x in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        rayleigh = float(sum((a * b).sum() for a, b in zip(v, hv, strict=True)))
        v = [h.detach() for h in hv]
    assert rayleigh == pytest.approx(values[0], rel=0.02)


def test_diagnose_needs_a_diagnosis(trained_run: dlforge.Run) -> None:
    result = runner.invoke(app, ["diagnose", str(trained_run.path)])
    assert result.exit_code == 2 and "--sharpness" in result.output


# ---------------------------------------------------------------- train.label_smoothing


@pytest.mark.parametrize("task, data, model", [
    ("image_classification", {"source": "builtin:digits"}, {"name": "resnet_small"}),
    ("text_classification", {"source": "builtin:rotten_tomatoes"}, {"name": "transformer"}),
    ("tabular_classification", {"source": "builtin:adult", "label": "income"}, {"name": "mlp"}),
])
def test_every_classification_task_trains_with_label_smoothing(task: str, data: dict, model: dict) -> None:
    logits, targets = torch.randn(16, 5), torch.randint(0, 5, (16,))
    for alpha in (0.0, 0.1):
        spec = dlforge.validate_spec({"name": "x", "task": task, "data": data, "model": model,
                                      "train": {"label_smoothing": alpha}})
        loss = TASKS.get(task)(spec).loss(logits, targets)
        assert float(loss) == pytest.approx(float(F.cross_entropy(logits, targets, label_smoothing=alpha)))
        # ... which is the cross-entropy against (1 − α)·onehot + α/K
        p = (1 - alpha) * F.one_hot(targets, 5) + alpha / 5
        assert float(loss) == pytest.approx(float(-(p * logits.log_softmax(1)).sum(1).mean()), rel=1e-6)


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_label_smoothing_out_of_range_is_a_spec_error(value: float) -> None:
    with pytest.raises(SpecError, match="label_smoothing"):
        dlforge.validate_spec(digits_spec(label_smoothing=value))


# ---------------------------------------------------------------- the reliability diagram, before and after


def test_report_shows_reliability_before_and_after_temperature_scaling(trained_run: dlforge.Run) -> None:
    ev = trained_run.read_eval()
    cal = ev["calibration"]
    assert cal["bins"] == 15 and cal["temperature"] == trained_run.read_meta()["temperature"]
    assert cal["before"]["accuracy"] == cal["after"]["accuracy"] == ev["metrics"]["accuracy"]
    assert cal["after"]["ece"] == ev["metrics"]["ece"] and cal["before"]["ece"] != cal["after"]["ece"]
    assert sum(b["n"] for b in cal["before"]["reliability"]) == ev["n"]
    html = (trained_run.path / "report.html").read_text()
    assert "before and after temperature scaling (T = " in html and "before temperature scaling</td>" in html
    with Image.open(trained_run.path / "plots" / "reliability.png") as image:
        assert image.width > image.height  # two diagrams side by side
