"""KServe's Open Inference Protocol V2: its codec (an input tensor -> instances, predictions -> output tensors) and
its routes.

    GET /v2  /v2/health/{live,ready}  /v2/models/{name}[/ready]     POST /v2/models/{name}/infer
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from dlforge.errors import InputError
from dlforge.serve.bodies import V2Request, V2Tensor, read_json_body
from dlforge.serve.openapi import BODY_ERRORS, error_responses, json_body_doc
from dlforge.serve.served import DLFORGE_VERSION, Served

V2_DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
                "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
                "FP32": np.float32, "FP64": np.float64, "BYTES": object}


# ---------------------------------------------------------------- routes


def add_v2_routes(app: FastAPI, s: Served) -> None:
    @app.get("/v2", tags=["v2"], summary="Server metadata")
    async def v2_server() -> dict[str, Any]:
        return {"name": "dlforge", "version": DLFORGE_VERSION, "extensions": []}

    @app.get("/v2/health/live", tags=["v2"])
    async def v2_live() -> dict[str, Any]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["v2"], responses=error_responses(503))
    async def v2_ready() -> JSONResponse:
        return JSONResponse({"ready": s.ready}, 200 if s.ready else 503)

    @app.get("/v2/models/{name}", tags=["v2"], summary="Model metadata", responses=error_responses(404, 422))
    async def v2_model(name: str) -> dict[str, Any]:
        _known(s, name)
        platform = "onnxruntime_onnx" if s.backend == "onnx" else "pytorch"
        outputs = [{"name": o["name"], "datatype": o["datatype"], "shape": [-1, *o["shape"][1:]]}
                   for o in v2_outputs(s.example_predictions)]  # learnt from the warm-up's prediction
        return {"name": s.name, "versions": [s.version], "platform": platform,
                "inputs": [{"name": "input", "datatype": "BYTES", "shape": [-1]}], "outputs": outputs}

    @app.get("/v2/models/{name}/ready", tags=["v2"], responses=error_responses(404, 422, 503))
    async def v2_model_ready(name: str) -> JSONResponse:
        _known(s, name)
        return JSONResponse({"name": s.name, "ready": s.ready}, 200 if s.ready else 503)

    @app.post("/v2/models/{name}/infer", tags=["v2"], summary="Inference (Open Inference Protocol V2)",
              responses=error_responses(*BODY_ERRORS, 404, 503, 504), openapi_extra=json_body_doc(V2Request))
    async def v2_infer(name: str, request: Request) -> dict[str, Any]:
        _known(s, name)
        body = await read_json_body(request, V2Request)
        instances = v2_instances(body.inputs[0])
        predictions = await s.predict(instances, body.parameters, f"/v2/models/{name}/infer")
        outputs = v2_outputs(predictions)
        if body.outputs:  # the client asked for some outputs only
            wanted = {o.get("name") for o in body.outputs}
            outputs = [o for o in outputs if o["name"] in wanted]
        return {"model_name": s.name, "model_version": s.version, "id": body.id or "", "outputs": outputs}


def _known(s: Served, name: str) -> None:
    if name != s.name:
        raise HTTPException(404, f"unknown model {name!r}; this server serves {s.name!r}")


# ---------------------------------------------------------------- codec


def v2_instances(t: V2Tensor) -> list[Any]:
    """A V2 input tensor -> one instance per entry along its first axis."""
    where = "inputs[0]"
    if t.datatype not in V2_DATATYPES:
        raise InputError(f"{where}.datatype", f"{t.datatype!r} is not a V2 datatype ({', '.join(V2_DATATYPES)})")
    count = math.prod(t.shape)
    flat = list(_flatten(t.data))
    if len(flat) != count or count == 0:
        raise InputError(f"{where}.data", f"{len(flat)} values do not fill shape {t.shape}")
    if t.datatype == "BYTES":
        if len(t.shape) > 1 and math.prod(t.shape[1:]) != 1:
            raise InputError(f"{where}.shape", f"BYTES inputs are one per instance: shape [N] or [N, 1], got {t.shape}")
        return flat
    try:
        array = np.asarray(flat, dtype=V2_DATATYPES[t.datatype]).reshape(t.shape)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{where}.data", f"values are not {t.datatype}") from None
    return list(array)


def _flatten(data: list[Any]) -> Any:
    """The values of nested lists, in order; without recursion (a body may nest as deep as the JSON parser goes)."""
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            yield v
        else:
            stack.pop()


def v2_outputs(predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One V2 output per prediction field: strings as BYTES, numbers as FP64, equal-length number lists as an
    FP64 matrix, anything else (objects, nested lists) as BYTES holding JSON. No predictions: no outputs."""
    outputs = []
    for key in predictions[0] if predictions else ():
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

