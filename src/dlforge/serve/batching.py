"""Dynamic batching: concurrent requests share one forward pass.

Requests wait in a queue. The batcher takes the first, then every queued request with the same
prediction options, up to `max_batch_size` items, and runs the Predictor once on all their items, in
one worker thread (the model is never run by two threads at once; torch uses its own threads inside
a forward pass). While the model is busy, requests pile up and the next batch takes them all. It
waits for company (at most `max_wait_ms` after the first request) only while other requests are
`arriving`: accepted by the server, still being decoded. So a lone request never waits, and a burst
of concurrent ones shares one pass. With `max_batch_size: 1` every request runs alone: the same
code, batching off.

A batch that fails on a user error is re-run one request at a time, so one bad request never
spoils another's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dlforge.errors import DlforgeError


@dataclass
class _Request:
    items: list[Any]
    options: dict[str, Any]
    future: asyncio.Future
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = json.dumps(self.options, sort_keys=True, default=str)  # requests batch only with equal options


class Batcher:
    def __init__(self, predict: Callable[..., list[dict[str, Any]]], max_batch_size: int = 32,
                 max_wait_ms: float = 5.0, on_batch: Callable[[int], None] | None = None) -> None:
        self.predict = predict  # Predictor.predict: (items, **options) -> one prediction per item
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.on_batch = on_batch  # called with each batch's item count and seconds (the metrics)
        self.arriving = 0  # requests accepted but not yet queued (the server counts them)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlforge-model")
        self._queue: asyncio.Queue[_Request] | None = None
        self._held: deque[_Request] = deque()  # taken from the queue, waiting for a batch with their options
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="dlforge-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=True)

    def enqueue(self, items: list[Any], options: dict[str, Any]) -> asyncio.Future:
        """Queue a request; its future gets one prediction per item (cancel it to give up)."""
        request = _Request(items, options, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(request)
        return request.future

    async def _next(self, timeout: float | None) -> _Request | None:
        if self._held:
            return self._held.popleft()
        if timeout is None:
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), timeout) if timeout > 0 else self._queue.get_nowait()
        except (TimeoutError, asyncio.QueueEmpty):
            return None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            batch, size = [first], len(first.items)
            deadline = loop.time() + self.max_wait
            skipped: list[_Request] = []
            while size < self.max_batch_size:
                # what is queued now; wait (until the deadline) only for requests known to be on their way
                nxt = await self._next(max(deadline - loop.time(), 0) if self.arriving else 0)
                if nxt is None:
                    break
                if nxt.key != first.key or size + len(nxt.items) > self.max_batch_size:
                    skipped.append(nxt)  # next batch's
                    if len(skipped) > self.max_batch_size:
                        break
                    continue
                batch.append(nxt)
                size += len(nxt.items)
            self._held.extendleft(reversed(skipped))  # keep arrival order
            batch = [r for r in batch if not r.future.cancelled()]  # timed out while waiting
            if batch:
                await loop.run_in_executor(self.executor, self._predict, batch, loop)

    def _predict(self, batch: list[_Request], loop: asyncio.AbstractEventLoop) -> None:
        """In the model thread: one pass over every item, answers handed back to the event loop."""
        items = [item for r in batch for item in r.items]
        started = time.perf_counter()
        try:
            results = self.predict(items, **batch[0].options)
        except Exception as e:
            if len(batch) > 1 and isinstance(e, DlforgeError):
                for r in batch:  # find whose input it was: each request alone
                    self._predict([r], loop)
                return
            for r in batch:
                loop.call_soon_threadsafe(_settle, r.future, None, e)
            return
        if self.on_batch is not None:
            self.on_batch(len(items), time.perf_counter() - started)
        start = 0
        for r in batch:
            loop.call_soon_threadsafe(_settle, r.future, results[start:start + len(r.items)], None)
            start += len(r.items)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the request timed out meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
