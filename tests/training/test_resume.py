"""Kill a training process mid-run, resume it, and get the uninterrupted run's weights bit for bit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
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


def quick_spec(tmp_path: Path) -> Path:
    """Two short epochs (600 digits, a narrow model): for the tests of what happens between them."""
    spec = digits_spec(epochs=2, batch_size=128)
    spec["data"]["limit"] = 600
    spec["model"]["kwargs"] = {"width": 8}
    return write_spec(tmp_path / "quick.yaml", spec)


def only_run(runs_dir: Path) -> dlforge.Run:
    (path,) = list(runs_dir.iterdir())
    return dlforge.Run(path)


def train_until(spec: Path, runs_dir: Path, sig: int, epochs: int = 1) -> tuple[int, str]:
    """Run `dlforge train spec` in a subprocess, send it `sig` once `epochs` epochs are logged and one is
    checkpointed: its exit code and stderr."""
    with open(runs_dir.parent / f"{runs_dir.name}.stderr", "w+") as stderr:
        proc = subprocess.Popen([*DLFORGE, "train", str(spec), "--runs-dir", str(runs_dir)],
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            runs = list(runs_dir.glob("*/metrics.jsonl"))
            if runs and len(runs[0].read_text().splitlines()) >= epochs and \
                    (runs[0].parent / "checkpoints" / "last.pt").exists():
                break
            time.sleep(0.01)
        os.killpg(proc.pid, sig)  # its process group: the trainer, and any data loader workers
        code = proc.wait()
        stderr.seek(0)
        return code, stderr.read()


def test_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    spec = spec_path(tmp_path)
    cli("train", spec, "--runs-dir", tmp_path / "straight", check=True)
    straight = only_run(tmp_path / "straight")

    # Start the same training, and kill -9 it once two epochs are done.
    train_until(spec, tmp_path / "killed", signal.SIGKILL, epochs=2)
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


def test_sigterm_stops_training_like_ctrl_c_and_the_run_resumes(tmp_path: Path) -> None:
    code, stderr = train_until(quick_spec(tmp_path), tmp_path / "runs", signal.SIGTERM)  # as Kubernetes evicting
    run = only_run(tmp_path / "runs")
    assert code == 128 + signal.SIGTERM  # was -15: killed by the signal, with no message
    assert stderr.rstrip().endswith("terminated (SIGTERM)")
    assert f"{run.path}: terminated; the checkpoint of its last finished epoch is kept; resume it with: dlforge " \
           f"train --resume {run.path}" in stderr and "Traceback" not in stderr
    assert json.loads((run.path / "FAILED").read_text())["reason"] == "terminated"
    assert run.status() == "failed" and not (run.path / "RUNNING").exists()
    assert len(run.read_metrics()) == 1
    cli("train", "--resume", run.path, check=True)
    assert run.is_complete and [r["epoch"] for r in run.read_metrics()] == [1, 2]


def test_resume_refuses_a_run_still_training_on_this_host(trained_run: dlforge.Run, tmp_path: Path) -> None:
    run = dlforge.Run(shutil.copytree(trained_run.path, tmp_path / trained_run.path.name))
    (run.path / "COMPLETE").unlink()
    sleeper = subprocess.Popen(["sleep", "300"])  # a live process that is not this one
    try:
        marker = {"pid": sleeper.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
        (run.path / "RUNNING").write_text(json.dumps(marker))
        assert run.status() == "running"
        proc = cli("train", "--resume", run.path)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
            f"error: {run.path}: still training: process {sleeper.pid} on {socket.gethostname()} since "
            "2026-01-01T00:00:00+00:00; stop it first, or give --force if that process is not training this run"]
        # The same pid on another host (a run folder on a shared volume) cannot be checked from here: not refused.
        (run.path / "RUNNING").write_text(json.dumps({**marker, "host": "another-host"}))
        assert run.training_process() is None and run.status() == "stopped"
        (run.path / "RUNNING").write_text(json.dumps(marker))
        cli("train", "--resume", run.path, "--force", check=True)  # the override: its last epoch is checkpointed
        assert run.is_complete and not (run.path / "RUNNING").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    (run.path / "RUNNING").write_text(json.dumps(marker))  # the pid is dead now: not running
    assert run.training_process() is None


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
