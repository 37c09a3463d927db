"""`dlforge demo` (what `make demo` runs): the full digits run, as shipped, under its promises."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import cli


def test_demo_reaches_097_in_under_3_minutes(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = cli("demo", "--runs-dir", tmp_path, check=True, timeout=400)
    seconds = time.monotonic() - started
    (run,) = list(tmp_path.iterdir())
    accuracy = json.loads((run / "eval.json").read_text())["metrics"]["accuracy"]
    assert accuracy >= 0.97, accuracy
    assert seconds < 180, seconds
    assert "test accuracy" in proc.stdout and str(run / "report.html") in proc.stdout.replace("\n", "")
    assert (run / "COMPLETE").exists()
