"""The lab runner: a lab's own options reach it by name, and unknown ones are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlforge.errors import DlforgeError
from dlforge.labs import run_lab
from tests.conftest import cli


def test_unknown_lab_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(DlforgeError, match=r"lab attention takes no option colour; its options: seed, run, sentence"):
        run_lab("attention", tmp_path, colour="red")
    assert not (tmp_path / "results.json").exists()
    proc = cli("lab", "run", "attention", "--out", tmp_path, "-o", "no-equals-sign")
    assert proc.returncode == 2 and "expected key=value" in proc.stderr
