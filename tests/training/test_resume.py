"""Kill a training process mid-run, resume it, and get the uninterrupted run's weights bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dlforge
from dlforge.devices import seed_everything
from dlforge.errors import RunError
from dlforge.pipeline import callbacks_from_spec
from dlforge.spec import SpecBase
from dlforge.tasks.image_classification import ImageClassification
from dlforge.training import Callback, Trainer
from tests.conftest import DLFORGE, cli, digits_spec, write_spec

EPOCHS = 8


def spec_path(tmp_path: Path) -> Path:
    # Augmentation on: resume must restore the RNG that draws it, not only the shuffle order.
    spec = digits_spec(epochs=EPOCHS, batch_size=32, early_stopping={"patience": 50})
    spec["data"]["augment"] = {"rotate": 10, "translate": 0.1}
    spec["model"]["kwargs"] = {"width": 16}
    return write_spec(tmp_path / "spec.yaml", spec)


def only_run(runs_dir: Path) -> dlforge.Run:
    (path,) = list(runs_dir.iterdir())
    return dlforge.Run(path)


def test_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    spec = spec_path(tmp_path)
    cli("train", spec, "--runs-dir", tmp_path / "straight", check=True)
    straight = only_run(tmp_path / "straight")

    # Start the same training, and kill -9 it once two epochs are checkpointed.
    proc = subprocess.Popen([*DLFORGE, "train", str(spec), "--runs-dir", str(tmp_path / "killed")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list((tmp_path / "killed").glob("*/metrics.jsonl"))
        if runs and len(runs[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = only_run(tmp_path / "killed")
    epochs_done = len(killed.read_metrics())
    assert 2 <= epochs_done < EPOCHS, "the process was not killed mid-run"
    assert not killed.is_complete and killed.status() == "stopped"
    with pytest.raises(RunError, match="did not finish"):
        dlforge.load(killed.path)
    assert "stopped" in cli("runs", tmp_path / "killed", check=True).stdout

    cli("train", "--resume", killed.path, check=True)
    assert killed.is_complete
    a, b = load_file(straight.weights_path), load_file(killed.weights_path)
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "resumed weights differ from the uninterrupted run's"
    # The metric history is the same too, apart from wall-clock times.
    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "time_s"} for row in rows]
    assert strip(killed.read_metrics()) == strip(straight.read_metrics())
    assert json.loads((killed.path / "eval.json").read_text())["metrics"] == \
        json.loads((straight.path / "eval.json").read_text())["metrics"]


def test_resume_refuses_finished_runs_and_extra_arguments(trained_run: dlforge.Run, tmp_path: Path) -> None:
    proc = cli("train", "--resume", trained_run.path)
    assert proc.returncode == 2 and "already finished" in proc.stderr
    proc = cli("train", spec_path(tmp_path), "--resume", trained_run.path)
    assert proc.returncode == 2 and "give no SPEC" in proc.stderr


class StopAt(Callback):
    """Raise at the start of epoch `epoch` (0-based), like a process dying between two epochs."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        if trainer.epoch == self.epoch:
            raise KeyboardInterrupt


def fit_digits(spec: SpecBase, run: dlforge.Run, callbacks: list[Callback], resume: bool) -> Trainer:
    """The Trainer on the digits task in this process, seeded, into `run`."""
    seed_everything(0)
    task = ImageClassification(spec)
    prepared = task.prepare()
    trainer = Trainer(spec.train, [*callbacks_from_spec(spec.train), *callbacks], run=run, progress=False)
    return trainer.fit(task, prepared.model, prepared.train, prepared.val, prepared.meta, resume=resume)


@pytest.mark.parametrize("train", [
    {"optimizer": {"name": "sgd", "lr": 0.05, "nesterov": True}, "scheduler": "onecycle", "grad_clip": 1.0},
    {"optimizer": {"name": "adamw", "lr": 3e-3}, "scheduler": "none", "early_stopping": {"patience": 2,
                                                                                         "min_delta": 0.5}},
])
def test_resume_in_process_for_each_optimizer_and_schedule(tmp_path: Path, train: dict) -> None:
    spec = dlforge.validate_spec(digits_spec(epochs=4, **train))

    straight = fit_digits(spec, dlforge.Run.create(tmp_path / "a", "x"), [], resume=False)
    stopped = dlforge.Run.create(tmp_path / "b", "x")
    with pytest.raises(KeyboardInterrupt):
        fit_digits(spec, stopped, [StopAt(2)], resume=False)
    assert len(stopped.read_metrics()) == 2
    resumed = fit_digits(spec, stopped, [], resume=True)
    assert resumed.epoch == straight.epoch  # early stopping's state came back with the checkpoint
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert [r["val/loss"] for r in stopped.read_metrics()] == [r["val/loss"] for r in straight.history]


def test_without_checkpoints_a_resumed_run_starts_over_cleanly(tmp_path: Path) -> None:
    spec = dlforge.validate_spec(digits_spec(epochs=3, checkpoint=False))

    run = dlforge.Run.create(tmp_path, "x")
    with pytest.raises(KeyboardInterrupt):
        fit_digits(spec, run, [StopAt(2)], resume=False)
    assert not run.checkpoint_path.exists() and len(run.read_metrics()) == 2
    resumed = fit_digits(spec, run, [], resume=True)
    assert resumed.epoch == 3
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2, 3]  # the stopped run's rows were dropped
    assert (run.path / "checkpoints" / "best.safetensors").exists()  # best weights are kept either way
