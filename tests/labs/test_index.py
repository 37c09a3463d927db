"""labs/index.html: built over finished labs, opened in headless Chromium (every figure loads, every link
resolves, no console error); `dlforge lab run all` refuses one lab's options."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlforge.labs import describe, run_lab
from dlforge.labs.commands import app
from dlforge.labs.index import write_index
from tests.browser import CHROMIUM, open_page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make test` (Debian package)")
def test_index_opens_in_chromium(tmp_path: Path) -> None:
    root = tmp_path / "labs"
    run_lab("autodiff", root / "autodiff", quick=True)
    (root / "half-written").mkdir()  # a folder without results.json is no finished lab
    index = write_index(root, describe(), failed={"hessian": "RuntimeError: out of memory"})
    assert index == root / "index.html"
    seen = open_page(index)
    assert seen["errors"] == []
    assert seen["titles"] == ["Labs", "autodiff"]
    alts = sorted(alt for alt, _, _ in seen["images"])
    assert alts == ["parity.png", "training.png"]
    assert all(complete and width > 0 for _, complete, width in seen["images"]), seen["images"]
    assert "autodiff/summary.md" in seen["links"] and "autodiff/results.json" in seen["links"]
    for href in seen["links"]:
        if not href.startswith("#"):
            assert (root / href).is_file(), href
    assert seen["tables"] >= 3  # the contents, the headline, the summary's own tables
    page = index.read_text()
    assert "failed: RuntimeError: out of memory" in page and "half-written" not in page

    # A missing figure is left out rather than shown broken; and the check can fail: a broken one is caught.
    (root / "autodiff" / "parity.png").unlink()
    (root / "autodiff" / "training.png").write_bytes(b"not a png")
    broken = open_page(write_index(root))
    assert [alt for alt, _, _ in broken["images"]] == ["training.png"]
    assert not all(width > 0 for _, _, width in broken["images"])


def test_run_all_takes_no_lab_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "all", "--quick", "--out", str(tmp_path), "-o", "run=x"])
    assert result.exit_code == 2 and "give a lab's name, not all" in result.output
    assert not (tmp_path / "index.html").exists()
