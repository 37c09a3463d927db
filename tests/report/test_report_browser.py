"""report.html renders in headless Chromium: every image loads, no console error."""

from __future__ import annotations

from pathlib import Path

import pytest

import dlforge
from tests.browser import CHROMIUM, open_page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make test` (Debian package)")
def test_report_renders_without_errors(trained_run: dlforge.Run, tmp_path: Path) -> None:
    seen = open_page(trained_run.path / "report.html")
    assert seen["errors"] == []
    assert seen["titles"] == ["Summary", "Training", "Evaluation", "Model card", "Spec"]
    alts = [alt for alt, _, _ in seen["images"]]
    for expected in ("Training curves", "Gradient flow", "Confusion matrix", "Reliability", "Test examples"):
        assert any(a.startswith(expected) for a in alts), expected
    assert all(complete and width > 0 for _, complete, width in seen["images"]), seen["images"]

    # The check can fail: the same page with one image cut short is caught.
    broken = (trained_run.path / "report.html").read_text().replace('base64,iVBOR', 'base64,AAAA', 1)
    (tmp_path / "broken.html").write_text(broken)
    assert not all(width > 0 for _, _, width in open_page(tmp_path / "broken.html")["images"])
