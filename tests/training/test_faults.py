"""A disk fault during training (full, read-only, over a quota) is one line naming the file, and the last good
checkpoint survives it. The fault is real: the resumed process runs under RLIMIT_FSIZE, so writing a file past the
limit fails in the kernel with EFBIG, as a full disk fails with ENOSPC."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
from pathlib import Path

import torch

from tests.conftest import DLFORGE
from tests.training.test_resume import only_run, quick_spec, train_until


def test_a_write_that_fails_mid_training_is_one_line_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    train_until(quick_spec(tmp_path), tmp_path / "runs", signal.SIGKILL)  # adamw: its state makes last.pt largest
    run = only_run(tmp_path / "runs")
    checkpoint = run.checkpoint_path.read_bytes()
    epoch = torch.load(run.checkpoint_path, weights_only=True)["epoch"]
    best = run.path / "checkpoints" / "best.safetensors"
    limit = len(checkpoint) // 2  # room for every other file (the best weights are a third of last.pt), not it
    assert best.stat().st_size < limit

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: write() says EFBIG

    proc = subprocess.run([*DLFORGE, "train", "--resume", str(run.path)], capture_output=True, text=True,
                          preexec_fn=small_disk, timeout=300)
    assert proc.returncode == 2, proc.stderr  # was a 53-64-line traceback
    error = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert error == [f"error: {run.checkpoint_path}: File too large (the checkpoint of its last finished epoch is "
                     f"kept; resume it with: dlforge train --resume {run.path})"]
    assert "Traceback" not in proc.stderr
    assert json.loads((run.path / "FAILED").read_text())["reason"] == f"{run.checkpoint_path}: File too large"
    assert len(run.read_metrics()) > epoch  # it trained an epoch more, and failed to checkpoint it
    assert run.checkpoint_path.read_bytes() == checkpoint  # the last good one, whole
    assert torch.load(run.checkpoint_path, weights_only=True)["epoch"] == epoch == 1
    assert [p.name for p in run.checkpoint_path.parent.iterdir() if p.name.startswith(".")] == []  # no temporary
