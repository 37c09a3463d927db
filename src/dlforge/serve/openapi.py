"""The OpenAPI description of the predict routes: the request body in the task's own instance schema (FastAPI
cannot infer it: the routes read their body themselves, whatever its content type)."""

from __future__ import annotations

from typing import Any

from dlforge.serve.served import Served


def predict_route_doc(s: Served) -> dict[str, Any]:
    """`openapi_extra` of POST /predict, /invocations and Vertex AI's predict route."""
    return {"requestBody": predict_body_schema(s), "responses": {"200": {"description": "one prediction per "
                                                                 "instance: {\"predictions\": [...]}"}}}


def predict_body_schema(s: Served) -> dict[str, Any]:
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
