"""`serve.monitor.window: N`: the server keeps its last N inputs and, every `every_s` seconds when new ones came,
compares them with the run's reference profile (as `dlforge monitor` does) and sets Prometheus gauges: the share
of drifted input columns, dataset drift, the embedding-drift score, the label-free accuracy estimate. Each gauge
appears on /metrics with its first measured value: before the first comparison (or with the window off) there is
none, never a 0 that reads as "no drift".

The forward pass that embeds the window runs in the model's own thread (the batcher's executor), so it never
overlaps a batch: the embedding hook would see the batch's activations. The statistics run in another thread."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from dlforge.drift.profile import compare_tables, features, read_profile
from dlforge.spec import DriftWindowSpec
from dlforge.tasks.capabilities import Profiled

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from dlforge.predictor import Predictor
    from dlforge.serve.metrics import ServerMetrics

log = logging.getLogger("dlforge.serve")


class DriftWindow:
    def __init__(self, predictor: Predictor, run_dir: Any, settings: DriftWindowSpec, metrics: ServerMetrics) -> None:
        self.predictor = predictor
        self.settings = settings
        self.metrics = metrics
        self.profile, self.reference = read_profile(run_dir)  # no profile: a clear error at start, not later
        self.items: collections.deque[Any] = collections.deque(maxlen=settings.window)
        self.added = 0  # inputs seen since start; a check runs only when it moved
        self.checked_at = 0  # `added` when the last comparison began
        self.last: dict[str, Any] | None = None  # the latest result, as drift.json holds it

    def add(self, items: list[Any]) -> None:
        """Inputs the server answered (called on the event loop)."""
        self.items.extend(items)
        self.added += len(items)

    async def run(self, executor: Executor) -> None:
        """Compare every `every_s` seconds until cancelled; a failed comparison is logged, never fatal."""
        while True:
            await asyncio.sleep(self.settings.every_s)
            seen = self.added
            if seen == self.checked_at or len(self.items) < self.settings.min_items:
                continue
            try:
                await self.check(executor)
            except Exception:
                log.exception("drift window: the comparison failed")
            self.checked_at = seen

    async def check(self, executor: Executor) -> dict[str, Any]:
        items = self.predictor.capability(Profiled).profile_items(list(self.items), self.predictor.meta)
        loop = asyncio.get_running_loop()
        current = await loop.run_in_executor(executor, features, self.predictor, items, self.profile["pca"])
        self.last = await run_in_threadpool(compare_tables, self.profile, self.reference, current)
        self._publish(self.last, len(items))
        return self.last

    def _publish(self, result: dict[str, Any], items: int) -> None:
        gauge, inputs = self.metrics.drift_gauge, result["inputs"]
        gauge("dlforge_drift_window_items").set(items)
        gauge("dlforge_drift_share").set(inputs["share"])
        gauge("dlforge_drift_detected").set(int(result["drifted"]))
        for column in inputs["columns"]:
            gauge("dlforge_drift_column_drifted").labels(column["column"]).set(int(column["drifted"]))
        if result["embeddings"] is not None:
            gauge("dlforge_embedding_drift_auc").set(result["embeddings"]["domain_auc"])
            gauge("dlforge_embedding_drift_p_value").set(result["embeddings"]["p_value"])
        if "accuracy" in result:
            gauge("dlforge_estimated_accuracy").set(result["accuracy"]["estimated_current"])
        gauge("dlforge_drift_checked_timestamp_seconds").set(time.time())
