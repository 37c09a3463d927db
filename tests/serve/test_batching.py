"""Dynamic batching forms batches under concurrency, answers as one-at-a-time prediction does, and keeps one
bad request from spoiling the batch it shares; the request log records a sample without blocking."""

from __future__ import annotations

import base64
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import dlforge
from dlforge.request_log import read_log
from tests.serve.conftest import ThreadServer, assert_same_predictions, digit_pngs, slow_request


def _batch_histogram(metrics: str) -> tuple[float, float]:
    """(number of forward passes, number of items) from /metrics."""
    values = {}
    for line in metrics.splitlines():
        if line.startswith(("dlforge_batch_size_count", "dlforge_batch_size_sum")):
            name, value = line.split(" ")
            values[name] = float(value)
    return values["dlforge_batch_size_count"], values["dlforge_batch_size_sum"]


def _concurrently(url: str, bodies: list[tuple[str, dict]], busy: bool = True) -> list[httpx.Response]:
    """POST every (path, body) at once, while the model is busy with a slow request (when `busy`): they queue up
    behind it, as requests under load do, and the batcher takes them together."""
    barrier = threading.Barrier(len(bodies) + 1)

    def send(path: str, body: dict) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=60) as c:
            barrier.wait()
            return c.post(path, json=body)

    with ThreadPoolExecutor(len(bodies) + 1) as pool:
        slow = pool.submit(send, "/predict", slow_request() if busy else {"instances": digit_pngs(1)})
        time.sleep(0.3 if busy else 0.0)
        responses = list(pool.map(lambda pb: send(*pb), bodies))
        assert slow.result().status_code == 200
    return responses


def test_concurrent_requests_share_forward_passes(trained_run) -> None:
    images = digit_pngs(32, seed=5)
    offline = dlforge.load(trained_run.path)
    one_at_a_time = [offline.predict([base64.b64decode(i)])[0] for i in images]
    with ThreadServer(trained_run.path) as server:
        responses = _concurrently(server.url, [("/predict", {"instances": [i]}) for i in images])
        passes, items = _batch_histogram(httpx.get(f"{server.url}/metrics").text)
    assert [r.status_code for r in responses] == [200] * 32
    assert items == 32 + 64  # and the slow request's
    assert passes - 1 <= 32 / 4, f"{passes - 1:g} forward passes for 32 concurrent requests: batches were not formed"
    assert_same_predictions([r.json()["predictions"][0] for r in responses], one_at_a_time)


def test_batching_off_runs_each_request_alone(trained_run) -> None:
    images = digit_pngs(8, seed=6)
    with ThreadServer(trained_run.path, overrides=("serve.batching.max_batch_size=1",)) as server:
        responses = _concurrently(server.url, [("/predict", {"instances": [i]}) for i in images], busy=False)
        passes, items = _batch_histogram(httpx.get(f"{server.url}/metrics").text)
    assert all(r.status_code == 200 for r in responses)
    assert passes == items == 9


def test_a_bad_request_does_not_spoil_its_batch(trained_run) -> None:
    """A (2, 2, 5) array passes decoding but fails in the task's preprocessing, inside a shared batch."""
    name = trained_run.read_spec().name
    good = [("/predict", {"instances": [i]}) for i in digit_pngs(6, seed=7)]
    bad = (f"/v2/models/{name}/infer",
           {"inputs": [{"name": "image", "shape": [1, 2, 2, 5], "datatype": "UINT8", "data": [0] * 20}]})
    with ThreadServer(trained_run.path) as server:
        *answers, failed = _concurrently(server.url, [*good, bad])
    assert [r.status_code for r in answers] == [200] * len(good)
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
    from dlforge.request_log import RequestLog

    log = RequestLog(tmp_path / "r.sqlite", sample=0.25, model_version="m:1", seed=0)
    log.add("/predict", list(range(2000)), [{"label": "x"}] * 2000, 1.0)
    log.close()
    assert len(read_log(tmp_path / "r.sqlite")) == pytest.approx(500, abs=60)  # binomial sd ~ 19
