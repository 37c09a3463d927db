"""Real servers on loopback: in a thread of the test process (fast to start, the model loaded once), or as a
`dlforge serve` subprocess where the process itself is under test (signals, workers, the CLI)."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from dlforge.serve.app import create_app, load_served
from tests.conftest import DLFORGE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def digit_pngs(n: int, seed: int = 0) -> list[str]:
    """`n` digits from scikit-learn's set (8 x 8, grey) as base64 PNG strings."""
    from sklearn.datasets import load_digits

    images = load_digits().images[np.random.default_rng(seed).choice(1797, n, replace=False)]
    return [base64.b64encode(png_bytes(np.round(im * 255 / 16).astype(np.uint8))).decode() for im in images]


class ThreadServer:
    """uvicorn serving a run's app in a background thread, on a free loopback port."""

    def __init__(self, run: Path, overrides: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 backend: str = "torch") -> None:
        saved = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})
        try:
            self.served = load_served(run, backend=backend, overrides=overrides)
            app = create_app(self.served)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


class ProcessServer:
    """`dlforge serve ...` as a subprocess (the real CLI), ready when /health/ready answers 200."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [*DLFORGE, "serve", *args] if port else [*DLFORGE, "serve", *args, "--port", str(self.port)]
        self.env = {**os.environ, **(env or {})}

    def __enter__(self) -> ProcessServer:
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dlforge serve exited {self.proc.returncode}:\n{self.proc.stdout.read()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.proc.kill()  # (its workers may hold the output pipe open: not read here)
        raise RuntimeError("dlforge serve did not become ready in 180 s")

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.output = self.proc.stdout.read()
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def digits_server(trained_run) -> Iterator[ThreadServer]:
    """The shared digits run, served with the spec's defaults (batching on)."""
    with ThreadServer(trained_run.path) as server:
        yield server


def assert_same_predictions(served: list, offline: list, tol: float = 1e-5) -> None:
    """The same predictions: equal structure, labels and texts; numbers within `tol` (a batch of another size
    runs other float32 kernels, which differ in the last bits)."""
    import json

    def same(a: object, b: object, where: str) -> None:
        if isinstance(b, dict):
            assert isinstance(a, dict) and a.keys() == b.keys(), where
            for k in b:
                same(a[k], b[k], f"{where}.{k}")
        elif isinstance(b, list):
            assert isinstance(a, list) and len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                same(x, y, f"{where}[{i}]")
        elif isinstance(b, float):
            assert a == pytest.approx(b, abs=tol), where
        else:
            assert a == b, where

    same(served, json.loads(json.dumps(offline)), "predictions")


def slow_request(images: int = 64, side: int = 960) -> dict:  # 59 M pixels: under max_request_pixels
    """A request that keeps the model's thread busy for a while: many large (zero, so small as PNG) images,
    each resized in the task's preprocessing."""
    blank = base64.b64encode(png_bytes(np.zeros((side, side), np.uint8))).decode()
    return {"instances": [blank] * images}


class LimitedServer(ThreadServer):
    """A ThreadServer under `dlforge serve`'s own uvicorn settings (`server_options`): the header deadline, the
    connection cap, the grace period."""

    def __init__(self, run: Path, overrides: tuple[str, ...] = (), **kwargs: object) -> None:
        from dlforge.serve import server_options

        super().__init__(run, overrides, **kwargs)
        config = uvicorn.Config(self.server.config.app, host="127.0.0.1", port=self.port, log_level="warning",
                                **server_options(self.served.settings.limits))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
