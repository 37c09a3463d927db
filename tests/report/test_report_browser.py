"""report.html renders in headless Chromium: every image loads, no console error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

import dlforge

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(page_path: Path) -> dict:
    """Open a page; return its console errors, page errors, images and section titles."""
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri(), wait_until="load")
        images = page.eval_on_selector_all("img", "els => els.map(i => [i.alt, i.complete, i.naturalWidth])")
        titles = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
        browser.close()
    return {"errors": errors, "images": images, "titles": titles}


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make test` (Debian package)")
def test_report_renders_without_errors(trained_run: dlforge.Run, tmp_path: Path) -> None:
    seen = render(trained_run.path / "report.html")
    assert seen["errors"] == []
    assert seen["titles"] == ["Summary", "Training", "Evaluation", "Model card", "Spec"]
    alts = [alt for alt, _, _ in seen["images"]]
    for expected in ("Training curves", "Gradient flow", "Confusion matrix", "Reliability", "Test examples"):
        assert any(a.startswith(expected) for a in alts), expected
    assert all(complete and width > 0 for _, complete, width in seen["images"]), seen["images"]

    # The check can fail: the same page with one image cut short is caught.
    broken = (trained_run.path / "report.html").read_text().replace('base64,iVBOR', 'base64,AAAA', 1)
    (tmp_path / "broken.html").write_text(broken)
    assert not all(width > 0 for _, _, width in render(tmp_path / "broken.html")["images"])
