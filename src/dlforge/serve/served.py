"""The served model: a run's Predictor and what every route shares around it (settings, batcher, request log, drift
window, metrics), and `load_served`, which opens a finished run for serving.

The server reaches the model only through the Predictor's public surface, and the run only through `Run`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from dlforge.errors import DlforgeError, InputError
from dlforge.predictor import Predictor
from dlforge.request_log import RequestLog
from dlforge.run import Run
from dlforge.serve.batching import Batcher
from dlforge.serve.drift_window import DriftWindow
from dlforge.serve.metrics import ServerMetrics
from dlforge.spec import LimitsSpec, ServeSpec, apply_override
from dlforge.wire import Cost

log = logging.getLogger("dlforge")

INLINE_DECODE_BYTES = 64 * 1024
DLFORGE_VERSION = package_version("dlforge")
HEALTH_ROUTES = {"/health/live", "/health/ready", "/ping", "/v2/health/live", "/v2/health/ready"}


class DecodeBudget:
    """What all requests being decoded and predicted hold at once, in this process (pixels, and bytes of texts and
    rows): a request waits up to `serve.limits.queue_s` for room, then gets 503 with Retry-After."""

    def __init__(self, limits: LimitsSpec) -> None:
        self.capacity = Cost(limits.max_server_pixels, limits.max_server_bytes)
        self.wait_s = limits.queue_s
        self.held = Cost()
        self._changed: asyncio.Condition | None = None  # made in the server's event loop, on first use

    @contextlib.asynccontextmanager
    async def hold(self, cost: Cost) -> AsyncIterator[None]:
        self._changed = self._changed or asyncio.Condition()
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._fits(cost)), self.wait_s)
            except TimeoutError:
                raise HTTPException(503, "the server is decoding as much as it may (serve.limits.max_server_pixels, "
                                         "max_server_bytes); retry shortly",
                                    headers={"Retry-After": str(max(1, math.ceil(self.wait_s)))}) from None
            self.held += cost
        try:
            yield
        finally:
            async with self._changed:
                self.held = Cost(self.held.pixels - cost.pixels, self.held.bytes - cost.bytes)
                self._changed.notify_all()

    def _fits(self, cost: Cost) -> bool:
        return all(held + need <= cap for held, need, cap in zip(self.held, cost, self.capacity, strict=True))


@dataclass
class Served:
    """What the routes share: the Predictor and everything around it."""

    predictor: Predictor
    settings: ServeSpec
    name: str
    version: str
    backend: str
    api_key: str | None = None
    load_seconds: float = 0.0
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    batcher: Batcher | None = None
    request_log: RequestLog | None = None
    drift_window: DriftWindow | None = None
    ready: bool = False
    # The predictions of the wire's example, made by the warm-up: what a prediction holds (the V2 model metadata
    # lists its fields); empty when the warm-up failed.
    example_predictions: list[dict[str, Any]] = field(default_factory=list)
    eval: dict[str, Any] = field(default_factory=dict)  # the run's eval.json
    health_routes: set[str] = field(default_factory=lambda: set(HEALTH_ROUTES))  # never need the API key
    budget: DecodeBudget | None = None  # made from the settings

    def __post_init__(self) -> None:
        self.budget = self.budget or DecodeBudget(self.settings.limits)

    @property
    def wire(self) -> Any:
        return self.predictor.wire

    def decode(self, instances: list[Any], fields: Sequence[str] | None = None) -> list[Any]:
        """Instances -> Predictor items; an error names `fields[i]` (default `instances[i]`): the multipart field or
        the raw body the instance came in. A request over its budget is refused before anything is decoded."""
        self.cost(instances, fields)
        return self._decode(instances, fields)

    def cost(self, instances: list[Any], fields: Sequence[str] | None = None) -> Cost:
        """What decoding the request will hold, from the images' headers and the data's size; 413 over the
        per-request budgets (`serve.limits.max_batch`, `max_request_pixels`, `max_request_bytes`)."""
        limits = self.settings.limits
        if len(instances) > limits.max_batch:
            raise InputError("instances", f"{len(instances)} instances is over the limit of {limits.max_batch} per "
                                          "request", 413)
        fields = fields or [f"instances[{i}]" for i in range(len(instances))]
        total = Cost()
        for value, where in zip(instances, fields, strict=True):
            total += self.wire.cost(value, where, limits)
        if total.pixels > limits.max_request_pixels:
            raise InputError("instances", f"{total.pixels} pixels in all is over the request budget of "
                                          f"{limits.max_request_pixels} (serve.limits.max_request_pixels)", 413)
        if total.bytes > limits.max_request_bytes:
            raise InputError("instances", f"{total.bytes} bytes of data in all is over the request budget of "
                                          f"{limits.max_request_bytes} (serve.limits.max_request_bytes)", 413)
        return total

    def _decode(self, instances: list[Any], fields: Sequence[str] | None) -> list[Any]:
        fields = fields or [f"instances[{i}]" for i in range(len(instances))]
        return [self.wire.decode(v, f, self.settings.limits) for v, f in zip(instances, fields, strict=True)]

    def check_options(self, parameters: dict[str, Any], prefix: str = "parameters") -> None:
        allowed = self.predictor.prediction_options
        for name in parameters:
            if name not in allowed:
                raise InputError(f"{prefix}.{name}", f"unknown option; this model takes {', '.join(allowed) or 'none'}")

    async def predict(self, instances: list[Any], parameters: dict[str, Any], route: str,
                      fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Decode, queue for a batch, answer; the time limit covers it all. `fields`: as `decode` takes them."""
        self.check_options(parameters)
        started = time.perf_counter()
        timeout = self.settings.limits.timeout_s
        try:
            predictions = await asyncio.wait_for(self._predict(instances, parameters, fields), timeout)
        except TimeoutError:
            raise HTTPException(504, f"no answer within {timeout:g} s (serve.limits.timeout_s)") from None
        if self.request_log is not None:
            self.request_log.add(route, instances, predictions, 1000 * (time.perf_counter() - started))
            self.metrics.log_dropped.set(self.request_log.dropped)
        return predictions

    async def _predict(self, instances: list[Any], parameters: dict[str, Any],
                       fields: Sequence[str] | None) -> list[dict[str, Any]]:
        # Large inputs are measured and decoded in a thread, off the event loop; small ones (most requests) here,
        # where it costs less than the thread hop.
        small = sum(len(v) for v in instances if isinstance(v, str | bytes)) < INLINE_DECODE_BYTES

        async def run(call: Any, *args: Any) -> Any:
            return call(*args) if small else await run_in_threadpool(call, *args)

        cost = await run(self.cost, instances, fields)
        async with self.budget.hold(cost):  # until the prediction is made: the decoded items live till then
            self.batcher.arriving += 1  # the batcher may wait for this one
            try:
                items = await run(self._decode, instances, fields)
            finally:
                self.batcher.arriving -= 1
            predictions = await self.batcher.enqueue(items, parameters)  # cancelled on timeout: the batcher skips it
        if self.drift_window is not None:
            self.drift_window.add(items)
        return predictions

    async def warm_up(self) -> None:
        """One prediction on the wire's example before the first request: lazy initialisation is paid here, and
        the server learns what a prediction holds. A failure is logged, never fatal."""
        started = time.perf_counter()
        try:
            items = self.decode([self.wire.example(self.predictor.meta)])
            # in the model's thread, but not through the batcher: the batch metrics count requests only. Without the
            # fairness thresholds: they read a group column the wire's example does not have, and change no field.
            p = self.predictor

            def plain(batch: list[Any]) -> list[dict[str, Any]]:
                return p.postprocess(p.outputs(batch))

            predictions = await asyncio.get_running_loop().run_in_executor(self.batcher.executor, plain, items)
        except Exception as e:  # the server still serves
            log.warning("warm-up prediction failed: %s", e)
            return
        self.example_predictions = predictions
        self.load_seconds += time.perf_counter() - started


def load_served(run: str | os.PathLike, backend: str = "torch", device: str = "cpu",
                overrides: list[str] | tuple[str, ...] = ()) -> Served:
    """Load a run for serving; `overrides` are `serve.<field>=<value>` strings over the spec's `serve:`."""
    started = time.perf_counter()
    for item in overrides:  # before the model loads
        if not item.startswith("serve."):
            raise DlforgeError(f"--set {item}: only serve.<field> can be set when serving")
    run = Run.open(run)
    if backend == "onnx":
        from dlforge.export import ensure_onnx

        ensure_onnx(run)
    predictor = Predictor.from_run(run, device=device, backend=backend)
    settings = _settings(predictor.spec.serve, overrides)
    digest = run.weights_digest()[:12]
    served = Served(predictor, settings, predictor.spec.name, digest, backend,
                    api_key=os.environ.get("DLFORGE_API_KEY") or None)
    if settings.request_log.sample > 0:
        served.request_log = RequestLog(_log_path(run.path, settings.request_log.path), settings.request_log.sample,
                                        f"{served.name}:{digest}")
    if settings.monitor.window:
        served.drift_window = DriftWindow(predictor, run.path, settings.monitor, served.metrics)
    served.eval = run.read_eval() or {}
    served.load_seconds = time.perf_counter() - started
    return served


def _settings(settings: ServeSpec, overrides: list[str] | tuple[str, ...]) -> ServeSpec:
    """The spec's `serve:` section with `--set serve.<field>=<value>` overrides, validated."""
    if not overrides:
        return settings
    raw = {"serve": settings.model_dump()}
    for item in overrides:
        apply_override(raw, item)
    try:
        return ServeSpec.model_validate(raw["serve"])
    except ValidationError as e:
        err = e.errors()[0]
        raise DlforgeError(f"--set serve.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def _log_path(run: Path, configured: str | None) -> Path:
    path = Path(os.environ.get("DLFORGE_REQUEST_LOG") or configured or run / "serve" / "requests.sqlite")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.access(path.parent, os.W_OK):
            return path
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"dlforge-requests-{run.name}.sqlite"
    log.warning("request log: %s is not writable; logging to %s (set DLFORGE_REQUEST_LOG)", path, fallback)
    return fallback
