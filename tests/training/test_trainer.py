"""The Trainer: learning, callbacks, early stopping, gradient flow, best weights, clear failures."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from torchmetrics import MetricCollection
from torchmetrics.regression import MeanSquaredError

import dlforge
from dlforge.errors import DlforgeError
from dlforge.spec import TrainSpec
from dlforge.tasks.base import Task
from dlforge.training import Callback, EarlyStopping, GradientFlow, Trainer
from tests.conftest import digits_spec


class Regression(Task):
    """A minimal task on tensors, to drive the Trainer directly."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(outputs, targets)

    def metrics(self, meta: dict[str, Any]) -> MetricCollection:
        return MetricCollection({"mse": MeanSquaredError()})


def regression_data(n: int = 256, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.01 * torch.randn(n, 1, generator=g)
    return TensorDataset(x[: n * 3 // 4], y[: n * 3 // 4]), TensorDataset(x[n * 3 // 4:], y[n * 3 // 4:])


def fit(model: nn.Module, callbacks: list[Callback] = (), **train: Any) -> Trainer:
    config = TrainSpec(**{"epochs": 5, "batch_size": 32, "optimizer": {"lr": 0.2}, **train})
    torch.manual_seed(0)
    return Trainer(config, callbacks, progress=False).fit(Regression(None), model, *regression_data(), meta={})


def test_loss_falls_and_metric_is_logged() -> None:
    trainer = fit(nn.Linear(4, 1), epochs=8)
    losses = [row["train/loss"] for row in trainer.history]
    assert losses[-1] < 0.05 * losses[0]
    assert trainer.history[-1]["val/mse"] < 0.05
    assert trainer.monitor == "val/loss" and trainer.monitor_mode == "min"


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *args: self.calls.append(name)
        return super().__getattribute__(name)


def test_hooks_are_called_in_order() -> None:
    recorder = Recorder()
    fit(nn.Linear(4, 1), [recorder], epochs=1, batch_size=96)  # 192 train rows: 2 batches; 64 val rows: 1 batch
    batch = ["on_train_batch_start", "on_train_backward_end", "on_train_batch_end"]
    assert recorder.calls == ["on_fit_start", "on_train_epoch_start", *batch, *batch,
                              "on_validation_epoch_start", "on_validation_batch_start", "on_validation_batch_end",
                              "on_validation_epoch_end", "on_train_epoch_end", "on_fit_end"]


def test_early_stopping_stops_and_best_weights_are_restored() -> None:
    # lr so large the model diverges from its best epoch: early stopping ends it, the best weights return.
    stopper = EarlyStopping(patience=2)
    trainer = fit(nn.Linear(4, 1), [stopper], epochs=30, optimizer={"name": "sgd", "lr": 0.6, "momentum": 0.0},
                  scheduler="none")
    assert len(trainer.history) < 30
    assert trainer.should_stop
    best = min(row["val/loss"] for row in trainer.history)
    assert trainer.best_score_ == best and trainer.history[trainer.best_epoch_ - 1]["val/loss"] == best
    model = trainer.model.eval()
    x, y = regression_data()[1].tensors
    with torch.no_grad():
        assert nn.functional.mse_loss(model(x), y).item() == pytest.approx(best, rel=1e-5)


class GradScale(nn.Module):
    """Identity forward; backward multiplies the gradient by `factor` (a deep chain in one layer)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor + (x * (1 - self.factor)).detach()


def test_gradient_flow_records_every_layer_and_warns_on_vanishing(caplog: pytest.LogCaptureFixture) -> None:
    # Gradients reaching the first layer are scaled by 1e-12: they vanish; the last layer's do not.
    model = nn.Sequential(nn.Linear(4, 8), GradScale(1e-12), nn.Linear(8, 1))
    with caplog.at_level(logging.WARNING, logger="dlforge"):
        trainer = fit(model, [GradientFlow(every=2)], epochs=2)
    norms = trainer.history[-1]["grad_norm"]
    assert set(norms) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert norms["0.weight"] < 1e-7 < norms["2.weight"]
    warned = trainer.history[-1]["grad_warnings"]
    assert any("0.weight" in w and "vanishing" in w for w in warned)
    assert not any(": 2." in w for w in warned)
    assert "0.weight: gradient norm" in caplog.text


def test_gradient_flow_warns_on_exploding() -> None:
    model = nn.Sequential(nn.Linear(4, 8), GradScale(1e6), nn.Linear(8, 1))
    trainer = fit(model, [GradientFlow(every=1)], epochs=1, optimizer={"lr": 1e-9})
    warned = trainer.history[0]["grad_warnings"]
    assert any("0.weight" in w and "exploding" in w for w in warned)
    assert not any(": 2." in w for w in warned)


def test_divergence_is_a_clear_error() -> None:
    with pytest.raises(DlforgeError, match=r"training diverged: the loss is (nan|inf) in epoch \d"):
        fit(nn.Linear(4, 1), epochs=3, optimizer={"name": "sgd", "lr": 1e6}, scheduler="none")


def test_fp16_on_cpu_is_a_clear_error() -> None:
    with pytest.raises(DlforgeError, match="fp16 needs a CUDA GPU"):
        fit(nn.Linear(4, 1), precision="fp16", device="cpu")


def test_bf16_autocast_on_cpu_trains() -> None:
    trainer = fit(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1)), precision="bf16", device="cpu",
                  epochs=6)
    assert trainer.amp_dtype == torch.bfloat16
    assert trainer.history[-1]["train/loss"] < 0.1 * trainer.history[0]["train/loss"]
    assert next(trainer.model.parameters()).dtype == torch.float32  # weights stay fp32 under autocast


def test_unknown_monitor_metric_is_named() -> None:
    with pytest.raises(DlforgeError, match=r"'val/acc' is not logged; logged: train/loss, val/mse, val/loss"):
        fit(nn.Linear(4, 1), monitor={"metric": "val/acc"})


def test_digits_learns_and_run_is_complete(trained_run: dlforge.Run) -> None:
    history = trained_run.read_metrics()
    assert len(history) == 4
    assert history[-1]["val/accuracy"] > 0.85
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    assert trained_run.status() == "complete"
    assert trained_run.read_eval()["metrics"]["accuracy"] > 0.85
    for name in ("spec.yaml", "meta.json", "metrics.jsonl", "eval.json", "model.safetensors", "report.html",
                 "checkpoints/last.pt", "plots/confusion_matrix.png", "plots/reliability.png"):
        assert (trained_run.path / name).is_file(), name
    assert all("grad_norm" in row for row in history)
    assert set(digits_spec()["train"]) <= set(type(trained_run.read_spec().train).model_fields)


def test_accumulated_batches_equal_one_large_batch() -> None:
    # 192 rows: 6 batches of 32 in groups of 3 take the same SGD steps as 2 batches of 96.
    sgd = {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}
    torch.manual_seed(1)
    init = nn.Linear(4, 1)
    small, large = nn.Linear(4, 1), nn.Linear(4, 1)
    small.load_state_dict(init.state_dict())
    large.load_state_dict(init.state_dict())
    a = fit(small, epochs=2, batch_size=32, accumulate_grad_batches=3, optimizer=sgd, scheduler="linear", warmup=1)
    b = fit(large, epochs=2, batch_size=96, optimizer=sgd, scheduler="linear", warmup=1)
    assert a.global_step == b.global_step == 4
    for p, q in zip(small.parameters(), large.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)
    assert not torch.allclose(small.weight, init.weight)  # it did train


def test_accumulation_with_a_short_last_group() -> None:
    # 6 batches in groups of 4: the last group has 2 batches and still steps, averaged over 2.
    trainer = fit(nn.Linear(4, 1), epochs=1, batch_size=32, accumulate_grad_batches=4)
    assert trainer.global_step == 2


def test_warmup_then_linear_decay() -> None:
    # 6 optimizer steps per epoch x 5 epochs = 30; warm-up over 10% = 3 steps, then linear to 0.
    lrs: list[float] = []

    class LrLog(Callback):
        def on_train_batch_start(self, trainer: Trainer, batch: Any, index: int) -> None:
            lrs.append(trainer.optimizer.param_groups[0]["lr"])

    fit(nn.Linear(4, 1), [LrLog()], epochs=5, scheduler="linear", warmup=0.1, optimizer={"lr": 0.3})
    expected = [0.3 * s / 3 for s in range(3)] + [0.3 * (1 - (s - 3) / 27) for s in range(3, 30)]
    assert lrs == pytest.approx(expected, abs=1e-9)
    with pytest.raises(DlforgeError, match=r"train\.warmup"):
        fit(nn.Linear(4, 1), epochs=1, scheduler="linear", warmup=50)
