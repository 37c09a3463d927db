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
failure is logged here and answered with a bare 500, never a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from dlforge.errors import DlforgeError, InputError
from dlforge.predictor import Predictor
from dlforge.request_log import RequestLog
from dlforge.serve.batching import Batcher
from dlforge.serve.drift_window import DriftWindow
from dlforge.serve.metrics import ServerMetrics
from dlforge.spec import ServeSpec

log = logging.getLogger("dlforge")

INLINE_DECODE_BYTES = 64 * 1024
DLFORGE_VERSION = package_version("dlforge")
HEALTH_ROUTES = {"/health/live", "/health/ready", "/ping", "/v2/health/live", "/v2/health/ready"}
V2_DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
                "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
                "FP32": np.float32, "FP64": np.float64, "BYTES": object}


# ---------------------------------------------------------------- request bodies (also the OpenAPI schema)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Body):
    instances: list[Any] = Field(min_length=1, description="inputs, one per prediction (see /metadata)")
    parameters: dict[str, Any] = Field(default_factory=dict, description="prediction options (see /metadata)")


class ExplainRequest(_Body):
    instances: list[Any] = Field(min_length=1, max_length=16, description="inputs to explain (see /metadata)")
    method: str | None = Field(None, description="ig, saliency, gradcam, occlusion, lime or shap; default: the "
                                                 "input kind's")
    target: str | None = Field(None, description="the class (forecasts: quantile) to explain; default: the "
                                                 "prediction")
    box: int | None = Field(None, ge=0, description="detection: which detected object")
    parameters: dict[str, Any] = Field(default_factory=dict, description="prediction options (see /metadata)")


class V2Tensor(_Body):
    name: str
    shape: list[int] = Field(min_length=1)
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2Request(_Body):
    id: str | None = None
    inputs: list[V2Tensor] = Field(min_length=1, max_length=1, description="one tensor: the batch of inputs")
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- the served model


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
    outputs: list[dict[str, Any]] = field(default_factory=list)  # V2 outputs, from the warm-up prediction
    eval: dict[str, Any] = field(default_factory=dict)  # the run's eval.json
    health_routes: set[str] = field(default_factory=lambda: set(HEALTH_ROUTES))  # never need the API key

    @property
    def wire(self) -> Any:
        return self.predictor.wire

    def decode(self, instances: list[Any], prefix: str = "instances") -> list[Any]:
        limit = self.settings.limits.max_batch
        if len(instances) > limit:
            raise InputError(prefix, f"{len(instances)} instances is over the limit of {limit} per request", 413)
        return [self.wire.decode(v, f"{prefix}[{i}]", self.settings.limits) for i, v in enumerate(instances)]

    def check_options(self, parameters: dict[str, Any], prefix: str = "parameters") -> None:
        allowed = self.predictor.prediction_options
        for name in parameters:
            if name not in allowed:
                raise InputError(f"{prefix}.{name}", f"unknown option; this model takes {', '.join(allowed) or 'none'}")

    async def predict(self, instances: list[Any], parameters: dict[str, Any], route: str) -> list[dict[str, Any]]:
        """Decode, queue for a batch, answer; the time limit covers it all."""
        self.check_options(parameters)
        started = time.perf_counter()
        timeout = self.settings.limits.timeout_s
        try:
            predictions = await asyncio.wait_for(self._predict(instances, parameters), timeout)
        except TimeoutError:
            raise HTTPException(504, f"no answer within {timeout:g} s (serve.limits.timeout_s)") from None
        if self.request_log is not None:
            self.request_log.add(route, instances, predictions, 1000 * (time.perf_counter() - started))
            self.metrics.log_dropped.set(self.request_log.dropped)
        return predictions

    async def _predict(self, instances: list[Any], parameters: dict[str, Any]) -> list[dict[str, Any]]:
        self.batcher.arriving += 1  # the batcher may wait for this one
        try:
            # Large inputs are decoded in a thread, off the event loop; small ones (most requests) here, where
            # it costs less than the thread hop.
            small = sum(len(v) for v in instances if isinstance(v, str | bytes)) < INLINE_DECODE_BYTES
            items = self.decode(instances) if small else await run_in_threadpool(self.decode, instances)
        finally:
            self.batcher.arriving -= 1
        predictions = await self.batcher.enqueue(items, parameters)  # cancelled on timeout: the batcher skips it
        if self.drift_window is not None:
            self.drift_window.add(items)
        return predictions

    async def warm_up(self) -> None:
        """One prediction on the wire's example before the first request: lazy initialisation is paid here, and
        the V2 model metadata learns its outputs. A failure is logged, never fatal."""
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
        self.outputs = [{"name": o["name"], "datatype": o["datatype"], "shape": [-1, *o["shape"][1:]]}
                        for o in _v2_outputs(predictions)]
        self.load_seconds += time.perf_counter() - started


def load_served(run: str | os.PathLike, backend: str = "torch", device: str = "cpu",
                overrides: list[str] | tuple[str, ...] = ()) -> Served:
    """Load a run for serving; `overrides` are `serve.<field>=<value>` strings over the spec's `serve:`."""
    from dlforge.run import Run
    from dlforge.spec import apply_override

    started = time.perf_counter()
    run = Run.open(run)
    spec = run.read_spec()
    settings = spec.serve
    if overrides:
        raw = {"serve": settings.model_dump()}
        for item in overrides:
            if not item.startswith("serve."):
                raise DlforgeError(f"--set {item}: only serve.<field> can be set when serving")
            apply_override(raw, item)
        try:
            settings = ServeSpec.model_validate(raw["serve"])
        except ValidationError as e:
            err = e.errors()[0]
            raise DlforgeError(f"--set serve.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    if backend == "onnx":
        from dlforge.export import ensure_onnx

        ensure_onnx(run)
    kwargs = {"backend": backend} if backend != "torch" else {}
    predictor = Predictor.from_run(run, device=device, **kwargs)
    digest = run.weights_digest()[:12]
    served = Served(predictor, settings, spec.name, digest, backend,
                    api_key=os.environ.get("DLFORGE_API_KEY") or None)
    if settings.request_log.sample > 0:
        served.request_log = RequestLog(_log_path(run.path, settings.request_log.path), settings.request_log.sample,
                                        f"{served.name}:{digest}")
    if settings.monitor.window:
        served.drift_window = DriftWindow(predictor, run.path, settings.monitor, served.metrics)
    served.eval = run.read_eval() or {}
    served.load_seconds = time.perf_counter() - started
    return served


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


# ---------------------------------------------------------------- the app


def create_app(served: Served) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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
        yield
        served.ready = False  # in-flight requests have finished: uvicorn drains them before the lifespan ends
        if watching:
            watching.cancel()
        await served.batcher.stop()
        if served.request_log is not None:
            served.request_log.close()

    app = FastAPI(title=f"dlforge: {served.name}", version=served.version, lifespan=lifespan,
                  description=f"{served.predictor.meta['task']} model `{served.name}` served by dlforge")
    _routes(app, served)
    _errors(app)
    app.add_middleware(Guard, served=served)
    return app


def _routes(app: FastAPI, served: Served) -> None:
    s = served

    # ------------------------------------------------------------ native, SageMaker, Vertex AI
    async def predict(request: Request) -> JSONResponse:
        instances, parameters = await _read_predict_body(request)
        predictions = await s.predict(instances, parameters, request.scope["path"])
        return JSONResponse({"predictions": predictions}, headers={"X-Model-Version": s.version})

    async def ready() -> JSONResponse:
        if not s.ready:
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse({"status": "ready"})

    body_doc = {"requestBody": _predict_body_schema(s), "responses": {"200": {"description": "one prediction per "
                                                                              "instance: {\"predictions\": [...]}"}}}
    for path in {"/predict", "/invocations", os.environ.get("AIP_PREDICT_ROUTE") or "/predict"}:
        app.add_api_route(path, predict, methods=["POST"], summary="Predict", openapi_extra=body_doc,
                          tags=["predict"])
    for path in {"/health/ready", "/ping", os.environ.get("AIP_HEALTH_ROUTE") or "/ping"}:
        app.add_api_route(path, ready, methods=["GET"], summary="Ready to answer", tags=["health"])
    s.health_routes.add(os.environ.get("AIP_HEALTH_ROUTE") or "/ping")

    @app.get("/health/live", tags=["health"], summary="The process is up")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/metadata", tags=["predict"], summary="Task, labels, input schema and model version")
    async def metadata() -> dict[str, Any]:
        meta = s.predictor.meta
        example = s.wire.example(meta) if s.wire.kind not in ("image",) else None  # an image example is noise
        return {"name": s.name, "version": s.version, "task": meta["task"], "model": meta.get("model"),
                "classes": meta.get("classes"), "backend": s.backend,
                "input": {"kind": s.wire.kind, "schema": s.wire.schema(meta), "example": example},
                "parameters": {name: meta.get("predict", {}).get(name) for name in s.predictor.prediction_options},
                "metrics": s.eval.get("headline") or s.eval.get("metrics"),
                "batching": s.settings.batching.model_dump(), "limits": s.settings.limits.model_dump(),
                "dlforge": DLFORGE_VERSION}

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(s.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/explain", summary="Which parts of each input drove its prediction (as `dlforge explain`)")
    async def explain(body: ExplainRequest) -> JSONResponse:
        from dlforge.explain import explain_json  # captum, shap, lime: only when asked

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

    @app.get("/drift", summary="The last comparison of recent inputs with the training reference (serve.monitor)")
    async def drift() -> dict[str, Any]:
        if s.drift_window is None:
            raise HTTPException(404, "drift monitoring is off; serve with --set serve.monitor.window=N")
        w = s.drift_window
        return {"window": len(w.items), "inputs_seen": w.added, "compared_after": w.checked_at, "result": w.last}

    page_html = files("dlforge.serve").joinpath("page.html").read_text()  # read once, not per request

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    # ------------------------------------------------------------ KServe Open Inference Protocol V2
    @app.get("/v2", tags=["v2"], summary="Server metadata")
    async def v2_server() -> dict[str, Any]:
        return {"name": "dlforge", "version": DLFORGE_VERSION, "extensions": []}

    @app.get("/v2/health/live", tags=["v2"])
    async def v2_live() -> dict[str, Any]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["v2"])
    async def v2_ready() -> JSONResponse:
        return JSONResponse({"ready": s.ready}, 200 if s.ready else 503)

    @app.get("/v2/models/{name}", tags=["v2"], summary="Model metadata")
    async def v2_model(name: str) -> dict[str, Any]:
        _known(s, name)
        platform = "onnxruntime_onnx" if s.backend == "onnx" else "pytorch"
        return {"name": s.name, "versions": [s.version], "platform": platform,
                "inputs": [{"name": "input", "datatype": "BYTES", "shape": [-1]}], "outputs": s.outputs}

    @app.get("/v2/models/{name}/ready", tags=["v2"])
    async def v2_model_ready(name: str) -> JSONResponse:
        _known(s, name)
        return JSONResponse({"name": s.name, "ready": s.ready}, 200 if s.ready else 503)

    @app.post("/v2/models/{name}/infer", tags=["v2"], summary="Inference (Open Inference Protocol V2)")
    async def v2_infer(name: str, body: V2Request) -> dict[str, Any]:
        _known(s, name)
        tensor = body.inputs[0]
        instances = _v2_instances(tensor)
        predictions = await s.predict(instances, body.parameters, f"/v2/models/{name}/infer")
        outputs = _v2_outputs(predictions)
        if body.outputs:  # the client asked for some outputs only
            wanted = {o.get("name") for o in body.outputs}
            outputs = [o for o in outputs if o["name"] in wanted]
        return {"model_name": s.name, "model_version": s.version, "id": body.id or "", "outputs": outputs}


def _known(s: Served, name: str) -> None:
    if name != s.name:
        raise HTTPException(404, f"unknown model {name!r}; this server serves {s.name!r}")


async def _read_predict_body(request: Request) -> tuple[list[Any], dict[str, Any]]:
    """The instances and parameters of a native / SageMaker / Vertex request, whatever its content type."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form()
        uploads = form.getlist("file")
        if not uploads or any(isinstance(u, str) for u in uploads):
            raise InputError("file", "upload one or more files in form field `file`")
        parameters = form.get("parameters")
        try:
            parameters = json.loads(parameters) if isinstance(parameters, str) else {}
        except ValueError:
            raise InputError("parameters", "not valid JSON") from None
        if not isinstance(parameters, dict):
            raise InputError("parameters", "expected a JSON object")
        return [await u.read() for u in uploads], parameters
    data = await request.body()
    if not data:
        raise InputError("body", 'empty; send {"instances": [...]}')
    if ctype in ("", "application/json") or ctype.endswith("+json"):
        try:
            body = json.loads(data)
        except ValueError as e:
            raise InputError("body", f"not valid JSON ({e})") from None
        try:
            req = PredictRequest.model_validate(body)
        except ValidationError as e:
            raise _validation_error(e.errors(), ("body",)) from None
        return req.instances, req.parameters
    return [data], {}  # a raw image (image/png, application/octet-stream, ...) or text (text/plain)


def _v2_instances(t: V2Tensor) -> list[Any]:
    """A V2 input tensor -> one instance per entry along its first axis."""
    where = "inputs[0]"
    if t.datatype not in V2_DATATYPES:
        raise InputError(f"{where}.datatype", f"{t.datatype!r} is not a V2 datatype ({', '.join(V2_DATATYPES)})")
    count = int(np.prod(t.shape))
    flat = list(_flatten(t.data))
    if len(flat) != count or count == 0:
        raise InputError(f"{where}.data", f"{len(flat)} values do not fill shape {t.shape}")
    if t.datatype == "BYTES":
        if len(t.shape) > 1 and int(np.prod(t.shape[1:])) != 1:
            raise InputError(f"{where}.shape", f"BYTES inputs are one per instance: shape [N] or [N, 1], got {t.shape}")
        return flat
    try:
        array = np.asarray(flat, dtype=V2_DATATYPES[t.datatype]).reshape(t.shape)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{where}.data", f"values are not {t.datatype}") from None
    return list(array)


def _flatten(data: Any) -> Any:
    for v in data:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v


def _v2_outputs(predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One V2 output per prediction field: strings as BYTES, numbers as FP64, equal-length number lists as an
    FP64 matrix, anything else (objects, nested lists) as BYTES holding JSON."""
    outputs = []
    for key in predictions[0]:
        values = [p.get(key) for p in predictions]
        n = len(values)
        if all(isinstance(v, str) for v in values):
            outputs.append({"name": key, "datatype": "BYTES", "shape": [n], "data": values})
        elif all(_number(v) for v in values):
            outputs.append({"name": key, "datatype": "FP64", "shape": [n], "data": values})
        elif (all(isinstance(v, list) and all(_number(x) for x in v) for v in values)
              and len({len(v) for v in values}) == 1):
            outputs.append({"name": key, "datatype": "FP64", "shape": [n, len(values[0])],
                            "data": [x for v in values for x in v]})
        else:
            outputs.append({"name": key, "datatype": "BYTES", "shape": [n], "data": [json.dumps(v) for v in values]})
    return outputs


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# ---------------------------------------------------------------- errors: {"error": ...}, never a traceback


def _validation_error(errors: list[dict[str, Any]], prefix: tuple = ()) -> InputError:
    err = errors[0]
    loc = [str(x) for x in (*prefix, *err["loc"]) if x != "body"] or ["body"]
    where = "".join(f"[{x}]" if x.isdigit() else f".{x}" for x in loc).lstrip(".")
    return InputError(where, err["msg"].lower(), 422)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def input_error(request: Request, e: InputError) -> JSONResponse:
        return JSONResponse({"error": str(e), "field": e.field}, e.status)

    @app.exception_handler(DlforgeError)
    async def user_error(request: Request, e: DlforgeError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, 400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        err = _validation_error(list(e.errors()))
        return JSONResponse({"error": str(err), "field": err.field}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def crash(request: Request, e: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal server error (logged on the server)"}, 500)


# ---------------------------------------------------------------- auth, body limit, metrics: one ASGI layer


class _TooLarge(Exception):
    pass


class Guard:
    """Outermost layer: Bearer-key check (health routes exempt), body-size limit, and the request metrics."""

    def __init__(self, app: Any, served: Served) -> None:
        self.app, self.s = app, served

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s, m = self.s, self.s.metrics
        status, started = [500], time.perf_counter()

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        m.in_flight.inc()
        try:
            headers = dict(scope["headers"])
            limit = int(s.settings.limits.max_body_mb * 1024 * 1024)
            if s.api_key and scope["path"] not in s.health_routes and not _authorized(headers, s.api_key):
                return await _reply(send_status, 401, "missing or wrong API key: send Authorization: Bearer <key>",
                                    [(b"www-authenticate", b"Bearer")])
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > limit:
                return await _reply(send_status, 413, f"body: {int(length)} bytes is over the limit of {limit}")
            received = [0]

            async def limited_receive() -> dict:
                message = await receive()
                received[0] += len(message.get("body", b""))
                if received[0] > limit:
                    raise _TooLarge
                return message

            try:
                await self.app(scope, limited_receive, send_status)
            except _TooLarge:
                await _reply(send_status, 413, f"body: over the limit of {limit} bytes")
        finally:
            m.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            m.requests.labels(template, scope["method"], str(status[0])).inc()
            m.latency.labels(template).observe(time.perf_counter() - started)


def _authorized(headers: dict[bytes, bytes], key: str) -> bool:
    given = headers.get(b"authorization", b"")
    scheme, _, token = given.partition(b" ")
    # compare_digest: the time taken does not tell how much of the key was right
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key.encode())


async def _reply(send: Any, status: int, error: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- OpenAPI: the task's instance schema


def _predict_body_schema(s: Served) -> dict[str, Any]:
    instance = s.wire.schema(s.predictor.meta)
    options = {name: {} for name in s.predictor.prediction_options}
    json_body = {"type": "object", "required": ["instances"], "additionalProperties": False, "properties": {
        "instances": {"type": "array", "minItems": 1, "maxItems": s.settings.limits.max_batch, "items": instance},
        "parameters": {"type": "object", "properties": options, "additionalProperties": False}}}
    content = {"application/json": {"schema": json_body}}
    if s.wire.kind == "image":
        content["multipart/form-data"] = {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}
    return {"required": True, "content": content}

