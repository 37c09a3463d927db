"""Kill a training process mid-run, resume it, and get the uninterrupted run's weights bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

import dlforge
from dlforge.errors import RunError
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
