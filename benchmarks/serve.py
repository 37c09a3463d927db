"""Serving throughput and latency of the digits CNN: dynamic batching on and off, torch and onnx backends,
at 1, 8 and 32 concurrent clients.

Each configuration starts a real `dlforge serve` process on loopback (one worker; the spec's batching, or
`serve.batching.max_batch_size=1` for off) and drives it with asyncio clients, each sending one
base64 PNG per request, back to back, for a fixed number of requests after a warm-up (aiohttp, whose
C parser leaves more of the cores to the server than a pure-Python client). Clients and server
share the machine's cores, as a sidecar load generator would.

Targets: batching gives at least 3x the throughput at concurrency 32; the onnx backend is at least as
fast as torch eager.

    uv run python benchmarks/serve.py [--run RUN] [--requests N] [--width 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

import dlforge
from dlforge.spec import validate_spec

CONCURRENCY = (1, 8, 32)


def train_digits(width: int, runs_dir: str) -> str:
    spec = {"name": "bench-serve-digits", "task": "image_classification",
            "data": {"source": "builtin:digits", "split": {"val": 0.1, "test": 0.2, "seed": 0}},
            "model": {"name": "resnet_small", "kwargs": {"width": width}},
            "train": {"epochs": 3, "batch_size": 64, "seed": 0, "checkpoint": False}}
    return str(dlforge.train(validate_spec(spec), runs_dir=runs_dir, progress=False).path)


def digit_pngs(n: int) -> list[str]:
    from sklearn.datasets import load_digits

    out = []
    for im in load_digits().images[:n]:
        buffer = io.BytesIO()
        Image.fromarray(np.round(im * 255 / 16).astype(np.uint8)).save(buffer, "PNG")
        out.append(base64.b64encode(buffer.getvalue()).decode())
    return out


class Server:
    def __init__(self, run: str, backend: str, batching: bool) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        args = [sys.executable, "-m", "dlforge.cli", "-q", "serve", run, "--port", str(self.port),
                "--backend", backend]
        if not batching:
            args += ["--set", "serve.batching.max_batch_size=1"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dlforge serve exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.3)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


async def drive(url: str, images: list[str], clients: int, requests: int) -> tuple[float, np.ndarray, int]:
    """(requests per second, latencies in seconds, non-200 count) for `requests` spread over `clients`."""
    import aiohttp  # C-accelerated HTTP parsing: the load generator shares the cores with the server

    latencies, failures = [], 0
    counter = iter(range(requests))
    bodies = [json.dumps({"instances": [im]}).encode() for im in images]
    headers = {"content-type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for i in counter:
            started = time.perf_counter()
            async with session.post(f"{url}/predict", data=bodies[i % len(bodies)], headers=headers) as r:
                await r.read()
                failures += r.status != 200
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        for i in range(min(100, requests)):  # warm-up: connections, allocator, onnxruntime's first runs
            async with session.post(f"{url}/predict", data=bodies[i % len(bodies)], headers=headers) as r:
                await r.read()
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        seconds = time.perf_counter() - started
    return requests / seconds, np.array(latencies), failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished image-classification run (default: train digits here)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per configuration")
    parser.add_argument("--width", type=int, default=32, help="resnet_small width when training")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train_digits(args.width, tmp)
        if args.run is None:
            console.print(f"trained {run}")
        if not os.path.exists(f"{run}/export/model.onnx"):
            from dlforge.export import export_run

            export_run(run, "onnx")
        images = digit_pngs(256)
        rows = {}
        for backend in ("torch", "onnx"):
            for batching in (True, False):
                with Server(run, backend, batching) as server:
                    for clients in CONCURRENCY:
                        rps, lat, failed = asyncio.run(drive(server.url, images, clients, args.requests))
                        rows[backend, batching, clients] = (rps, *np.percentile(lat, [50, 99]) * 1000, failed)
                        console.print(f"{backend:5} batching {'on ' if batching else 'off'} c={clients:2}: "
                                      f"{rps:7.0f} req/s", highlight=False)
    table = Table(title=f"dlforge serve, digits CNN: {args.requests} requests per row, {os.cpu_count()} CPU cores")
    for col in ("backend", "batching", "clients", "req/s", "p50 ms", "p99 ms", "non-200"):
        table.add_column(col, justify="right" if col not in ("backend", "batching") else "left")
    for (backend, batching, clients), (rps, p50, p99, failed) in rows.items():
        table.add_row(backend, "on" if batching else "off", str(clients), f"{rps:.0f}", f"{p50:.1f}", f"{p99:.1f}",
                      str(failed))
    console.print(table)
    for backend in ("torch", "onnx"):
        gain = rows[backend, True, 32][0] / rows[backend, False, 32][0]
        console.print(f"{backend}: batching at 32 clients gives {gain:.1f}x the throughput (target >= 3x)")
    ratio = rows["onnx", True, 32][0] / rows["torch", True, 32][0]
    console.print(f"onnx / torch throughput at 32 clients, batching on: {ratio:.2f} (target >= 1)")


if __name__ == "__main__":
    main()
