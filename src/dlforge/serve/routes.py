"""The native routes: predict, explain, the model's metadata, health, drift, Prometheus metrics and the page at /.

    POST /predict  /explain    GET /metadata  /health/live  /health/ready  /metrics  /drift  /

`predict_endpoint` and `ready_endpoint` also answer SageMaker's and Vertex AI's routes (`dlforge.serve.cloud`)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException

from dlforge.serve.bodies import ExplainRequest, read_json_body, read_predict_body
from dlforge.serve.openapi import BODY_ERRORS, error_responses, json_body_doc, predict_route_doc
from dlforge.serve.served import DLFORGE_VERSION, Served

READY_RESPONSES = {200: {"description": "ready"}, **error_responses(503)}


def predict_endpoint(s: Served) -> Callable[[Request], Awaitable[JSONResponse]]:
    """`{"predictions": [...]}` for a JSON, multipart or raw body (`read_predict_body`)."""

    async def predict(request: Request) -> JSONResponse:
        body = await read_predict_body(request)
        predictions = await s.predict(body.instances, body.parameters, request.scope["path"], body.fields)
        return JSONResponse({"predictions": predictions}, headers={"X-Model-Version": s.version})

    return predict


def ready_endpoint(s: Served) -> Callable[[], Awaitable[JSONResponse]]:
    """200 once the model has loaded and warmed up, 503 before (and while draining at shutdown)."""

    async def ready() -> JSONResponse:
        if not s.ready:
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse({"status": "ready"})

    return ready


def add_native_routes(app: FastAPI, s: Served) -> None:
    app.add_api_route("/predict", predict_endpoint(s), methods=["POST"], summary="Predict",
                      openapi_extra=predict_route_doc(s), tags=["predict"])
    app.add_api_route("/health/ready", ready_endpoint(s), methods=["GET"], summary="Ready to answer", tags=["health"],
                      responses=READY_RESPONSES)

    @app.get("/health/live", tags=["health"], summary="The process is up")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    example = s.wire.example(s.predictor.meta)  # what the page at / sends as it is; an image's: a small grey PNG

    @app.get("/metadata", tags=["predict"], summary="Task, labels, input schema and model version",
             responses=error_responses())
    async def metadata() -> dict[str, Any]:
        meta = s.predictor.meta
        return {"name": s.name, "version": s.version, "task": meta["task"], "model": meta.get("model"),
                "classes": meta.get("classes"), "backend": s.backend,
                "input": {"kind": s.wire.kind, "schema": s.wire.schema(meta), "example": example},
                "parameters": {name: meta.get("predict", {}).get(name) for name in s.predictor.prediction_options},
                "metrics": s.eval.get("headline") or s.eval.get("metrics"),
                "batching": s.settings.batching.model_dump(), "limits": s.settings.limits.model_dump(),
                "dlforge": DLFORGE_VERSION}

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=PlainTextResponse,
             responses=error_responses())
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(s.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/explain", summary="Which parts of each input drove its prediction (as `dlforge explain`)",
              responses=error_responses(*BODY_ERRORS, 504), openapi_extra=json_body_doc(
                  ExplainRequest, s.wire.schema(s.predictor.meta)))
    async def explain(request: Request) -> JSONResponse:
        from dlforge.explain import explain_json  # captum, shap, lime: only when asked

        body = await read_json_body(request, ExplainRequest)
        s.check_options(body.parameters)
        items = s.decode(body.instances)
        call = functools.partial(explain_json, s.predictor, items, method=body.method, target=body.target,
                                 box=body.box, options=body.parameters)
        # In the model's thread: explanations hook into the model, and must not overlap a batch's forward pass.
        timeout = s.settings.limits.timeout_s
        try:
            found = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(s.batcher.executor, call),
                                           timeout)
        except TimeoutError:
            raise HTTPException(504, f"no explanation within {timeout:g} s (serve.limits.timeout_s)") from None
        return JSONResponse({"explanations": found}, headers={"X-Model-Version": s.version})

    @app.get("/drift", summary="The last comparison of recent inputs with the training reference (serve.monitor)",
             responses=error_responses(404))
    async def drift() -> dict[str, Any]:
        if s.drift_window is None:
            raise HTTPException(404, "drift monitoring is off; serve with --set serve.monitor.window=N")
        w = s.drift_window
        return {"window": len(w.items), "inputs_seen": w.added, "compared_after": w.checked_at, "result": w.last}

    page_html = files("dlforge.serve").joinpath("page.html").read_text()  # read once, not per request

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)
