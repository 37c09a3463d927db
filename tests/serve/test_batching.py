"""Dynamic batching forms batches under concurrency, answers as one-at-a-time prediction does, and keeps one
bad request from spoiling the batch it shares; the request log records a sample without blocking."""

from __future__ import annotations

import base64
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import dlforge
from dlforge.serve.request_log import read_log
from tests.serve.conftest import ThreadServer, assert_same_predictions, digit_pngs


def _batch_histogram(metrics: str) -> tuple[float, float]:
    """(number of forward passes, number of items) from /metrics."""
    values = {}
    for line in metrics.splitlines():
        if line.startswith(("dlforge_batch_size_count", "dlforge_batch_size_sum")):
            name, value = line.split(" ")
            values[name] = float(value)
    return values["dlforge_batch_size_count"], values["dlforge_batch_size_sum"]


def _concurrently(url: str, bodies: list[dict], path: str = "/predict") -> list[httpx.Response]:
    """POST every body at once: all threads wait at a barrier, then send."""
    barrier = threading.Barrier(len(bodies))

    def send(body: dict) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=60) as c:
            barrier.wait()
            return c.post(path, json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def test_concurrent_requests_share_forward_passes(trained_run) -> None:
    images = digit_pngs(32, seed=5)
    offline = dlforge.load(trained_run.path)
    one_at_a_time = [offline.predict([base64.b64decode(i)])[0] for i in images]
    with ThreadServer(trained_run.path, overrides=("serve.batching.max_wait_ms=50",)) as server:
        responses = _concurrently(server.url, [{"instances": [i]} for i in images])
        passes, items = _batch_histogram(httpx.get(f"{server.url}/metrics").text)
    assert [r.status_code for r in responses] == [200] * 32
    assert items == 32
    assert passes < 32 / 2, f"{passes:g} forward passes for 32 concurrent requests: batches were not formed"
    assert_same_predictions([r.json()["predictions"][0] for r in responses], one_at_a_time)


def test_batching_off_runs_each_request_alone(trained_run) -> None:
    images = digit_pngs(8, seed=6)
    with ThreadServer(trained_run.path, overrides=("serve.batching.max_batch_size=1",)) as server:
        responses = _concurrently(server.url, [{"instances": [i]} for i in images])
        passes, items = _batch_histogram(httpx.get(f"{server.url}/metrics").text)
    assert all(r.status_code == 200 for r in responses)
    assert passes == items == 8


def test_a_bad_request_does_not_spoil_its_batch(trained_run) -> None:
    """A (2, 2, 5) array passes decoding but fails in the task's preprocessing, inside a shared batch."""
    name = trained_run.read_spec().name
    good = [{"instances": [i]} for i in digit_pngs(6, seed=7)]
    bad = {"inputs": [{"name": "image", "shape": [1, 2, 2, 5], "datatype": "UINT8", "data": [0] * 20}]}
    with ThreadServer(trained_run.path, overrides=("serve.batching.max_wait_ms=300",)) as server:
        barrier = threading.Barrier(len(good) + 1)

        def send(path: str, body: dict) -> httpx.Response:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                barrier.wait()
                return c.post(path, json=body)

        with ThreadPoolExecutor(len(good) + 1) as pool:
            futures = [pool.submit(send, "/predict", b) for b in good]
            failed = pool.submit(send, f"/v2/models/{name}/infer", bad).result()
        assert [f.result().status_code for f in futures] == [200] * len(good)
    assert failed.status_code == 400 and "image array" in failed.json()["error"]


def test_request_log_samples_into_sqlite_wal(trained_run, tmp_path) -> None:
    db = tmp_path / "requests.sqlite"
    images = digit_pngs(10, seed=8)
    with ThreadServer(trained_run.path, overrides=("serve.request_log.sample=1.0", f"serve.request_log.path={db}")
                      ) as server, server.client() as c:
        answers = [c.post("/predict", json={"instances": images[i:i + 2]}).json()["predictions"]
                   for i in range(0, 10, 2)]
    rows = read_log(db)  # the server has stopped: its log is flushed and closed
    assert [r["input"] for r in rows] == images
    assert [r["prediction"] for r in rows] == [p for a in answers for p in a]
    assert {r["route"] for r in rows} == {"/predict"}
    assert rows[0]["model_version"].endswith(server.served.version)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_request_log_sample_rate(trained_run, tmp_path) -> None:
    from dlforge.serve.request_log import RequestLog

    log = RequestLog(tmp_path / "r.sqlite", sample=0.25, model_version="m:1", seed=0)
    log.add("/predict", list(range(2000)), [{"label": "x"}] * 2000, 1.0)
    log.close()
    assert len(read_log(tmp_path / "r.sqlite")) == pytest.approx(500, abs=60)  # binomial sd ~ 19
