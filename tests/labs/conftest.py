"""What the lab tests share: one quick run of a lab through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from dlforge.labs.commands import app


def run_quick(name: str, out: Path) -> tuple[Path, dict[str, Any], str]:
    """`dlforge lab run NAME --quick --out OUT`: (folder, results, CLI output)."""
    result = CliRunner().invoke(app, ["run", name, "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "results.json").read_text()), result.output
