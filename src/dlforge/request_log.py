"""The request log: a sample of served inputs and predictions, for drift monitoring (`dlforge monitor --from-log`).

Responses never wait for it, nor fail because of it: a request puts a row on a bounded queue and one
background thread writes rows to SQLite in WAL mode, so readers (the monitor) never block the writer.
A row that cannot be queued (the queue is full), serialised or written is dropped and counted
(`dropped`, the server's `dlforge_request_log_dropped`). Each row holds the instance as it arrived (JSON:
a base64 image, a text, a series; an uploaded file as base64, a numeric tensor as nested lists), the
prediction, the route, the model version and the time.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("dlforge")

SCHEMA = """CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, route TEXT NOT NULL, model_version TEXT NOT NULL,
    input TEXT NOT NULL, prediction TEXT NOT NULL, latency_ms REAL)"""


class RequestLog:
    def __init__(self, path: str | Path, sample: float, model_version: str, capacity: int = 10_000,
                 seed: int | None = None) -> None:
        self.path, self.sample, self.model_version = Path(path), sample, model_version
        self.dropped = 0
        self._rng = random.Random(seed)
        self._queue: queue.Queue[tuple | None] = queue.Queue(maxsize=capacity)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.path) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)
        self._thread = threading.Thread(target=self._write, name="dlforge-request-log", daemon=True)
        self._thread.start()

    def add(self, route: str, instances: list[Any], predictions: list[dict[str, Any]], latency_ms: float) -> None:
        """Log each instance with probability `sample`; never blocks."""
        now = time.time()
        for instance, prediction in zip(instances, predictions, strict=True):
            if self._rng.random() >= self.sample:
                continue
            try:
                row = (now, route, self.model_version, _json(instance), _json(prediction), latency_ms)
            except (TypeError, ValueError, RecursionError) as e:  # the request was answered: only its row is lost
                self._drop(1, f"a row cannot be serialised ({e})")
                continue
            try:
                self._queue.put_nowait(row)
            except queue.Full:
                self._drop(1, "the queue is full")

    def _drop(self, rows: int, why: str) -> None:
        if not self.dropped:  # the first drop is worth a line; the rest are counted
            log.warning("request log %s: %s; dropping rows (counted in dlforge_request_log_dropped)", self.path, why)
        self.dropped += rows

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _write(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False)
        try:
            while True:
                rows = [self._queue.get()]
                while rows[-1] is not None and not self._queue.empty() and len(rows) < 500:
                    rows.append(self._queue.get_nowait())  # one transaction for what has piled up
                done = rows[-1] is None
                rows = [r for r in rows if r is not None]
                if rows:
                    try:
                        with db:
                            db.executemany("INSERT INTO requests (time, route, model_version, input, prediction, "
                                           "latency_ms) VALUES (?, ?, ?, ?, ?, ?)", rows)
                    except sqlite3.Error as e:  # a full disk must not take the server down
                        self._drop(len(rows), str(e))
                if done:
                    return
        finally:
            db.close()


def read_log(path: str | Path, since: float | None = None) -> list[dict[str, Any]]:
    """Rows of a request log (oldest first), optionally only those after the Unix time `since`."""
    with sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM requests WHERE time >= ? ORDER BY id", (since or 0.0,)).fetchall()
    return [{**dict(r), "input": json.loads(r["input"]), "prediction": json.loads(r["prediction"])} for r in rows]


def _json(value: Any) -> str:
    return json.dumps(value, default=_plain, allow_nan=False)  # strict JSON, as the server reads it


def _plain(value: Any) -> Any:
    """What a request's instance may hold besides JSON: an uploaded file, a decoded tensor (a V2 UINT8 image)."""
    import base64

    import numpy as np

    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()  # an uploaded file: logged as base64, like JSON images
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()  # as it arrived: nested lists of numbers (an image wire decodes them again)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
