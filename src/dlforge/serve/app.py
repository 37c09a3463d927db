"""The HTTP server of a finished run: one FastAPI app, every route calling the same Predictor.

    native     POST /predict  GET /metadata  GET /health/live  GET /health/ready  GET /  /docs  /openapi.json
    KServe V2  GET /v2  /v2/health/{live,ready}  /v2/models/{name}[/ready]  POST /v2/models/{name}/infer
    SageMaker  GET /ping  POST /invocations
    Vertex AI  $AIP_PREDICT_ROUTE and $AIP_HEALTH_ROUTE, when set
    metrics    GET /metrics (Prometheus)

Native, SageMaker and Vertex AI requests share one body, `{"instances": [...], "parameters": {...}}`, and
one answer, `{"predictions": [...]}`; /predict and /invocations also take a multipart upload (field
`file`, repeatable) or a raw image or text body. An instance is decoded by the task's wire format
(`dlforge.wire`), so no route knows which task it serves.

Every error is JSON `{"error": "<field>: <what is wrong>"}` with its 4xx status; an unexpected
failure is logged and answered with a bare 500, never a stack trace.

One module per concern:

    served.py   the served model (`Served`, `load_served`)       bodies.py   request bodies
    routes.py   native routes                                    cloud.py    SageMaker and Vertex AI routes
    v2.py       KServe V2 codec and routes                       errors.py   error handlers
    guard.py    API key, body limits, read deadlines, metrics    openapi.py  the predict body's schema
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from dlforge.serve.batching import Batcher
from dlforge.serve.cloud import add_cloud_routes
from dlforge.serve.errors import add_error_handlers
from dlforge.serve.guard import READ_TIMEOUT_STATE, Guard
from dlforge.serve.routes import add_native_routes
from dlforge.serve.served import DLFORGE_VERSION, Served, load_served
from dlforge.serve.v2 import add_v2_routes

__all__ = ["Served", "create_app", "load_served"]

log = logging.getLogger("dlforge")


def create_app(served: Served) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        b = served.settings.batching
        served.batcher = Batcher(served.predictor.predict, b.max_batch_size, b.max_wait_ms,
                                 on_batch=served.metrics.observe_batch)
        await served.batcher.start()
        await served.warm_up()
        watching = served.drift_window and asyncio.create_task(served.drift_window.run(served.batcher.executor))
        served.metrics.load_seconds.set(served.load_seconds)
        served.metrics.model.info({"name": served.name, "version": served.version, "task": served.predictor.meta[
            "task"], "backend": served.backend, "dlforge": DLFORGE_VERSION})
        served.ready = True
        log.info("serving %s (%s, version %s, %s backend), loaded in %.1f s", served.name,
                 served.predictor.meta["task"], served.version, served.backend, served.load_seconds)
        yield {READ_TIMEOUT_STATE: served.settings.limits.read_timeout_s}  # for uvicorn's protocol (guard.py)
        served.ready = False  # in-flight requests have finished: uvicorn drains them before the lifespan ends
        if watching:
            watching.cancel()
        await served.batcher.stop()
        if served.request_log is not None:
            served.request_log.close()

    app = FastAPI(title=f"dlforge: {served.name}", version=served.version, lifespan=lifespan,
                  description=f"{served.predictor.meta['task']} model `{served.name}` served by dlforge")
    add_native_routes(app, served)
    add_cloud_routes(app, served)
    add_v2_routes(app, served)
    add_error_handlers(app)
    app.add_middleware(Guard, served=served)
    return app
