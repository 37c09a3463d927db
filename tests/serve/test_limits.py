"""The server's budgets and deadlines, attacked over real sockets: a request of many huge-pixel images, concurrent
requests over the server-wide budget, an oversized chunked body, headers and bodies trickled in, a client that
leaves mid-upload, and SIGTERM while workers load."""

from __future__ import annotations

import base64
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.conftest import DLFORGE
from tests.serve.conftest import LimitedServer, ThreadServer, digit_pngs, free_port, png_bytes, slow_request

READ_TIMEOUT_S = 1.5
GOOD = digit_pngs(1)[0]


@pytest.fixture(scope="module")
def server(trained_run) -> Iterator[LimitedServer]:
    overrides = (f"serve.limits.read_timeout_s={READ_TIMEOUT_S}", "serve.limits.max_body_mb=0.5")
    with LimitedServer(trained_run.path, overrides) as s:
        yield s


def rss() -> int:
    """This process's resident memory in bytes (the thread server's included)."""
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_many_huge_pixel_images_in_one_request_get_413_before_decoding(server) -> None:
    """The issue's attack: eight single-colour 6000 x 6000 PNGs (35 kB each, 36 M pixels decoded)."""
    huge = base64.b64encode(png_bytes(np.zeros((6000, 6000), np.uint8))).decode()
    body = {"instances": [huge] * 8}
    before, peak, done = rss(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with server.client() as c:
            r = c.post("/predict", json=body)
    finally:
        done.set()
        watcher.join()
    assert r.status_code == 413, r.text
    assert r.json()["field"] == "instances" and "max_request_pixels" in r.json()["error"]
    assert "288000000 pixels" in r.json()["error"]
    # Decoding even one of them holds 36 MB (greyscale), its RGB copy 108 MB: nothing was decoded.
    assert peak[0] - before < 30 * 1024 * 1024, f"RSS rose by {(peak[0] - before) / 2**20:.0f} MB"


@pytest.mark.parametrize("kind", ["text_classification", "tabular_classification"])
def test_texts_and_rows_have_a_byte_budget(tiny_runs, kind) -> None:
    with ThreadServer(tiny_runs(kind), ("serve.limits.max_request_bytes=1000",)) as server, server.client() as c:
        example = server.served.wire.example(server.served.predictor.meta)
        size = server.served.wire.cost(example, "x", server.served.settings.limits).bytes
        assert 0 < size < 1000
        assert c.post("/predict", json={"instances": [example]}).status_code == 200
        r = c.post("/predict", json={"instances": [example] * (1000 // size + 1)})
        assert r.status_code == 413 and "max_request_bytes" in r.json()["error"], r.text


def test_data_size_counts_utf8_and_survives_any_nesting() -> None:
    from dlforge.wire import data_size

    assert data_size({"text": "é" * 10}) == len("text") + 20 and data_size([1, 2.5, None, True]) == 32
    assert data_size("\ud800") == 3  # a lone surrogate (valid JSON) counts, and does not raise
    deep: list = []
    for _ in range(100_000):  # nested far past the recursion limit
        deep = [deep]
    assert data_size(deep) == 0


def test_concurrent_requests_over_the_server_budget_get_503_with_retry_after(trained_run) -> None:
    """The server-wide budget holds one slow request's pixels (64 images of 960 x 960): a second request waits
    `queue_s`, then gets 503; once the first is answered it is served."""
    pixels = 64 * 960 * 960
    overrides = (f"serve.limits.max_request_pixels={pixels}", f"serve.limits.max_server_pixels={pixels}",
                 "serve.limits.queue_s=0.2")
    with LimitedServer(trained_run.path, overrides) as s, s.client() as c:
        first = {}
        thread = threading.Thread(target=lambda: first.setdefault("r", c.post("/predict", json=slow_request())))
        thread.start()
        deadline = time.monotonic() + 30
        while s.served.budget.held.pixels == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = httpx.post(f"{s.url}/predict", json={"instances": [GOOD]}, timeout=30)
        held = s.served.budget.held.pixels
        thread.join()
        assert held == pixels, "the slow request ended before the second one was answered: try a slower one"
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert "max_server_pixels" in r.json()["error"]
        assert first["r"].status_code == 200
        assert c.post("/predict", json={"instances": [GOOD]}).status_code == 200
        assert s.served.budget.held.pixels == 0


@pytest.mark.parametrize("route", ["/predict", "/v2/models/digits-test/infer"])
def test_a_chunked_oversized_body_gets_413_on_every_route(server, route) -> None:
    def chunks() -> Iterator[bytes]:  # no length known: httpx sends Transfer-Encoding: chunked
        yield b'{"instances": ["'
        for _ in range(64):
            yield b"A" * 16384
        yield b'"]}'

    with server.client() as c:
        r = c.post(route, content=chunks(), headers={"content-type": "application/json"})
        assert r.request.headers.get("transfer-encoding") == "chunked"
        assert r.status_code == 413, r.text
        assert "over the limit of 524288 bytes" in r.json()["error"]
        assert c.get("/health/ready").status_code == 200


def trickle(port: int, head: bytes, drip: bytes, every_s: float = 0.1, most_s: float = 30) -> tuple[bytes, float]:
    """Send `head`, then `drip` a byte at a time; what the server answered and after how long it closed."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(every_s)
    started, answer = time.monotonic(), b""
    try:
        sock.sendall(head)
        for byte in drip:
            if time.monotonic() - started > most_s:
                break
            try:
                sock.sendall(bytes([byte]))
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # reset: the server closed it
                break
            if not chunk:
                break
            answer += chunk
        return answer, time.monotonic() - started
    finally:
        sock.close()


def test_a_body_trickled_in_gets_408_within_the_read_deadline(server) -> None:
    head = b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    answer, took = trickle(server.port, head, b"x" * 1000)  # 100 s of body at the pace sent
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"read_timeout_s" in answer
    assert took < READ_TIMEOUT_S + 10  # closed at the deadline, not when the body would have ended


def test_headers_trickled_in_get_408_within_the_read_deadline(server) -> None:
    answer, took = trickle(server.port, b"GET /metadata HTTP/1.1\r\n", b"x-padding: 1\r\n" * 100)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert took < READ_TIMEOUT_S + 10


def test_a_client_leaving_mid_upload_is_one_info_line_and_no_500(server, caplog) -> None:
    uvicorn_log = logging.getLogger("uvicorn")  # it does not propagate to the root logger caplog listens on
    uvicorn_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"content-length: 100000\r\n\r\n" + b'{"instances": ["' + b"A" * 1000)
            time.sleep(0.2)
            sock.close()
            deadline = time.monotonic() + 10
            while not any("left before" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    left = [r for r in caplog.records if "left before" in r.getMessage()]
    assert len(left) == 1 and left[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    with server.client() as c:
        metrics = c.get("/metrics").text
    assert not re.search(r'dlforge_requests_total\{[^}]*status="500"', metrics)
    assert re.search(r'dlforge_requests_total\{[^}]*method="POST"[^}]*status="499"\} 1\.0', metrics)


def test_sigterm_while_workers_load_exits_within_the_grace_period(trained_run) -> None:
    """`--workers 2`: SIGTERM as the workers start loading. They stop at once; none starts serving, and the
    process exits 0 within `serve.limits.shutdown_grace_s`."""
    grace = 10
    proc = subprocess.Popen([*DLFORGE, "serve", str(trained_run.path), "--workers", "2", "--port", str(free_port()),
                             "--set", f"serve.limits.shutdown_grace_s={grace}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:  # the parent has loaded the model and started the workers
            lines.append(line)
            if "Started parent process" in line:
                break
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(grace)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        output = "".join(lines) + proc.stdout.read()
        proc.stdout.close()
    assert code == 0, output
    assert "Application startup complete" not in output  # before: each worker loaded, started, then drained
    assert "Traceback" not in output
