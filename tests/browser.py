"""Open a local page in headless Chromium (Debian's package, installed by `make test`) and read what a person sees."""

from __future__ import annotations

import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def open_page(page: Path, evaluate: str | None = None) -> dict:
    """Console and page errors, images ([alt, complete, natural width]), link targets, h2 titles, table count; with
    `evaluate` (a JavaScript expression or function), its value under "evaluated"."""
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        tab = browser.new_page()
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(page.as_uri(), wait_until="load")
        seen = {"errors": errors,
                "images": tab.eval_on_selector_all("img", "els => els.map(i => [i.alt, i.complete, i.naturalWidth])"),
                "links": tab.eval_on_selector_all("a[href]", "els => els.map(a => a.getAttribute('href'))"),
                "titles": tab.eval_on_selector_all("h2", "els => els.map(e => e.textContent)"),
                "tables": len(tab.query_selector_all("table"))}
        if evaluate:
            seen["evaluated"] = tab.evaluate(evaluate)
        browser.close()
    return seen
