"""`dlforge monitor` end to end: a trained run has its reference profile; the command compares a folder of
digits, writes drift.json and a report that opens in Chromium, and exits 1 on drift with --fail-on-drift; the
server's request log is read back with --from-log."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from dlforge.errors import DlforgeError
from dlforge.monitor.commands import parse_since
from tests.conftest import cli


def test_training_writes_a_reference_profile(trained_run) -> None:
    profile = json.loads((trained_run.path / "profile" / "profile.json").read_text())
    assert profile["task"] == "image_classification" and profile["rows"] == trained_run.read_meta()["sizes"]["test"]
    assert profile["metrics"]["accuracy"] == pytest.approx(trained_run.read_eval()["metrics"]["accuracy"])


def _folder(root, transform) -> str:
    """All ten digit classes as 8 x 8 PNG files, passed through `transform` (uint8 array -> uint8 array)."""
    digits = load_digits()
    for label in range(10):
        (root / str(label)).mkdir(parents=True)
        for i in np.flatnonzero(digits.target == label)[:30]:
            pixels = transform(np.round(digits.images[i] * 255 / 16).astype(np.uint8))
            Image.fromarray(pixels).save(root / str(label) / f"{i}.png")
    return str(root)


def test_monitor_a_brighter_folder(trained_run, tmp_path) -> None:
    bright = _folder(tmp_path / "bright", lambda a: np.clip(a.astype(int) + 90, 0, 255).astype(np.uint8))
    out = tmp_path / "report"
    proc = cli("monitor", trained_run.path, "--data", bright, "--out", out, "--fail-on-drift")
    assert proc.returncode == 1, proc.stderr
    assert "DRIFT" in proc.stdout
    result = json.loads((out / "drift.json").read_text())
    assert result["drifted"] and "brightness" in result["inputs"]["drifted_columns"]
    assert (out / "drift.html").exists() and (out / "plots" / "embeddings.png").exists()
    _opens_in_chromium(out / "drift.html")


def _opens_in_chromium(page) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return
    from playwright.sync_api import sync_playwright

    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page()
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(page.as_uri())
        images = tab.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        browser.close()
    assert errors == [] and images and all(w > 0 for w in images)


def test_bad_arguments(trained_run, tmp_path) -> None:
    proc = cli("monitor", trained_run.path)
    assert proc.returncode == 2 and "--data SOURCE or --from-log" in proc.stderr
    proc = cli("monitor", trained_run.path, "--from-log", tmp_path / "none.sqlite")
    assert proc.returncode == 2 and "no such request log" in proc.stderr
    assert parse_since("30m") == 1800 and parse_since("2d") == 172800
    with pytest.raises(DlforgeError, match="--since"):
        parse_since("yesterday")


def test_from_log_reads_what_the_server_logged(trained_run, tmp_path) -> None:
    from tests.serve.conftest import ThreadServer, digit_pngs

    db = tmp_path / "requests.sqlite"
    with ThreadServer(trained_run.path, overrides=("serve.request_log.sample=1.0", f"serve.request_log.path={db}")
                      ) as server, server.client() as c:
        for batch in np.array_split(np.array(digit_pngs(120, seed=3)), 12):
            assert c.post("/predict", json={"instances": list(batch)}).status_code == 200
    out = tmp_path / "report"
    proc = cli("monitor", trained_run.path, "--from-log", db, "--since", "1h", "--out", out, "--fail-on-drift")
    result = json.loads((out / "drift.json").read_text())
    assert result["rows"]["current"] == 120
    assert proc.returncode == 0 and not result["embeddings"]["drifted"], result["embeddings"]


def test_monitor_profile_rewrites_a_missing_profile(trained_run, tmp_path) -> None:
    run = shutil.copytree(trained_run.path, tmp_path / "old-run")
    shutil.rmtree(run / "profile")  # as if trained before profiles existed
    proc = cli("monitor", run, "--data", "builtin:digits", "--out", tmp_path / "x")
    assert proc.returncode == 2 and "dlforge monitor profile" in proc.stderr
    assert cli("monitor", "profile", run).returncode == 0
    profile = json.loads((run / "profile" / "profile.json").read_text())
    assert profile["rows"] == trained_run.read_meta()["sizes"]["test"]
    proc = cli("monitor", "profile")
    assert proc.returncode == 2 and "usage" in proc.stderr
