"""`serve.monitor.window`: a real server keeps its recent inputs, compares them with the run's reference profile
and says on /metrics (and /drift) whether they drifted."""

from __future__ import annotations

import base64
import re
import shutil
import time

import numpy as np
import pytest

import dlforge
from dlforge.errors import DlforgeError
from dlforge.serve.app import load_served
from dlforge.serve.metrics import DRIFT_GAUGES
from tests.serve.conftest import ThreadServer, png_bytes

WINDOW = ("serve.monitor.window=90", "serve.monitor.every_s=0.2", "serve.monitor.min_items=30")


def gauge(text: str, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", text, re.M)[1])


def wait_for_check(client, seen: int, timeout: float = 60) -> str:
    """/metrics once the window has been compared after the first `seen` inputs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if client.get("/drift").json()["compared_after"] >= seen:
            return client.get("/metrics").text
        time.sleep(0.1)
    raise AssertionError("the window was not compared in time")


def test_window_gauges_stay_calm_for_clean_digits_and_rise_for_brighter_ones(trained_run):
    predictor = dlforge.load(trained_run.path)
    items, _ = predictor.evaluation_data()
    images = np.asarray(items)[np.random.default_rng(0).permutation(len(items))[:90], ..., 0]  # (90, 8, 8) uint8
    encode = lambda batch: [base64.b64encode(png_bytes(im)).decode() for im in batch]  # noqa: E731
    with ThreadServer(trained_run.path, overrides=WINDOW) as server, server.client() as client:
        assert not [name for name in DRIFT_GAUGES if name in client.get("/metrics").text]  # nothing measured yet
        assert client.post("/predict", json={"instances": encode(images)}).status_code == 200
        calm = wait_for_check(client, 90)
        assert [name for name in DRIFT_GAUGES if name not in calm] == []
        assert gauge(calm, "dlforge_drift_detected") == 0
        assert gauge(calm, "dlforge_embedding_drift_auc") < 0.55
        assert 0.5 < gauge(calm, "dlforge_estimated_accuracy") <= 1

        brighter = np.clip(images.astype(int) + 80, 0, 255).astype(np.uint8)
        for chunk in np.array_split(brighter, 3):  # the window slides: all 90 clean inputs are pushed out
            assert client.post("/predict", json={"instances": encode(chunk)}).status_code == 200
        drifted = wait_for_check(client, 180)
        assert gauge(drifted, "dlforge_drift_detected") == 1
        assert gauge(drifted, "dlforge_embedding_drift_auc") > 0.55
        assert 'dlforge_drift_column_drifted{column="brightness"} 1.0' in drifted


def test_window_needs_a_profile(trained_run, tmp_path):
    run = shutil.copytree(trained_run.path, tmp_path / "run")
    shutil.rmtree(run / "profile")
    with pytest.raises(DlforgeError, match="dlforge monitor profile"):
        load_served(run, overrides=WINDOW)
    assert load_served(run).drift_window is None  # off by default: no profile needed
