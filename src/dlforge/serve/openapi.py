"""The OpenAPI description of the routes that read their body themselves (FastAPI cannot infer it: they parse
JSON strictly, and the predict routes take any content type), and of the errors every route can answer, so that
the document says what the server does (schemathesis' `--checks all` holds the server to it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from dlforge.serve.served import Served

ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "string", "description": "<field>: <what is wrong>"},
    "field": {"type": "string", "description": "where, e.g. instances[2].age"}}}
ERRORS = {
    400: "malformed input (`field` names it). JSON is strict: null is the one missing value; NaN, Infinity and "
         "numbers beyond float64's range are refused",
    401: "missing or wrong API key, when the server has one (Authorization: Bearer <key>)",
    404: "no such model, or the feature is off",
    413: "over a limit (serve.limits: body size, instances per request, pixels, characters, the request budget)",
    422: "the body does not have the shape its schema gives (`field` names where)",
    503: "not ready (loading, draining), or the server is decoding as much as it may (see Retry-After)",
    504: "no answer within serve.limits.timeout_s",
}
BODY_ERRORS = (400, 401, 413, 422)  # what any route with a body can answer


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that answers these error statuses (401: any route, when the server has a key)."""
    return {status: {"description": ERRORS[status], "content": {"application/json": {"schema": ERROR_SCHEMA}}}
            for status in sorted({401, *statuses})}


def predict_route_doc(s: Served) -> dict[str, Any]:
    """`openapi_extra` of POST /predict, /invocations and Vertex AI's predict route."""
    return {"requestBody": predict_body_schema(s), "responses": {
        "200": {"description": "one prediction per instance: {\"predictions\": [...]}"},
        **{str(k): v for k, v in error_responses(*BODY_ERRORS, 503, 504).items()}}}


def predict_body_schema(s: Served) -> dict[str, Any]:
    instance = s.wire.schema(s.predictor.meta)
    options = {name: {} for name in s.predictor.prediction_options}
    json_body = {"type": "object", "required": ["instances"], "additionalProperties": False, "properties": {
        "instances": {"type": "array", "minItems": 1, "maxItems": s.settings.limits.max_batch, "items": instance},
        "parameters": {"type": "object", "properties": options, "additionalProperties": False}}}
    content = {"application/json": {"schema": json_body}}
    if s.wire.kind == "image":
        content["multipart/form-data"] = {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}}}}
    return {"required": True, "content": content}


def json_body_doc(model: type[BaseModel], instance: dict[str, Any] | None = None,
                  max_items: int | None = None) -> dict[str, Any]:
    """`openapi_extra` for a route reading a JSON body of `model` itself (`bodies.read_json_body`): its schema,
    inlined (the document has no component for it), with `instances` items in the wire's schema when given."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    schema = _inline(schema, definitions)
    if instance is not None:
        schema["properties"]["instances"]["items"] = instance
    if max_items is not None:
        instances = schema["properties"]["instances"]
        instances["maxItems"] = min(max_items, instances.get("maxItems", max_items))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _inline(schema: Any, definitions: dict[str, Any]) -> Any:
    """`schema` with each `{"$ref": "#/$defs/X"}` replaced by X (the body models are not recursive)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {k: _inline(v, definitions) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, definitions) for v in schema]
    return schema
