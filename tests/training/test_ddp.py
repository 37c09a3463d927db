"""Distributed data parallel: two real processes under torchrun (gloo on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dlforge
from tests.conftest import digits_spec, write_spec


def test_torchrun_two_processes(tmp_path: Path) -> None:
    # The first epoch trains the head alone: DDP must cope with parameters that get no gradient.
    spec = write_spec(tmp_path / "spec.yaml", digits_spec(epochs=5, freeze_backbone_epochs=1))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "dlforge.cli", "train", str(spec), "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = list((tmp_path / "runs").iterdir())  # one run: only rank 0 writes
    run = dlforge.Run(path)
    assert run.is_complete
    meta = run.read_meta()
    assert meta["world_size"] == 2
    history = run.read_metrics()
    assert len(history) == 5 and history[-1]["val/accuracy"] > 0.5
    # Each process took half of each epoch's batches: 1257 rows / (2 x 64) -> 10 steps per epoch.
    assert history[0]["step"] == 10
    assert set(history[0]["grad_norm"]) == {"head.weight", "head.bias"} and len(history[1]["grad_norm"]) > 2
    assert run.read_eval()["metrics"]["accuracy"] > 0.5  # the saved model, evaluated on the whole test split
