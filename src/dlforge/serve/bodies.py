"""Request bodies: the pydantic models FastAPI validates (and documents in the OpenAPI schema), and the reading of
a native / SageMaker / Vertex AI predict request, whatever its content type."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dlforge.errors import InputError
from dlforge.serve.errors import validation_error


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


class PredictBody(NamedTuple):
    instances: list[Any]
    parameters: dict[str, Any]
    fields: list[str]  # what an error about each instance names: `instances[0]`, `file`, `body`


# A body of these types is one raw instance (an image, a text); any other is read as JSON, `curl -d`'s default
# application/x-www-form-urlencoded included: that is a JSON body sent without its header.
RAW_TYPES = ("image/", "text/", "application/octet-stream")


async def read_predict_body(request: Request) -> PredictBody:
    """The instances and parameters of a native / SageMaker / Vertex request: a JSON body `{"instances": [...],
    "parameters": {...}}`, a multipart upload (field `file`, repeatable), or one raw image or text."""
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
        fields = ["file"] if len(uploads) == 1 else [f"file[{i}]" for i in range(len(uploads))]
        return PredictBody([await u.read() for u in uploads], parameters, fields)
    data = await request.body()
    if not data:
        raise InputError("body", 'empty; send {"instances": [...]}')
    if ctype.startswith(RAW_TYPES):
        return PredictBody([data], {}, ["body"])  # a raw image (image/png, application/octet-stream) or text
    try:
        body = json.loads(data)
    except ValueError as e:
        raise InputError("body", f'not JSON ({e}); send {{"instances": [...]}} as application/json, a multipart '
                                 "upload in field `file`, or one raw image or text with its content type") from None
    try:
        req = PredictRequest.model_validate(body)
    except ValidationError as e:
        raise validation_error(e.errors(), ("body",)) from None
    return PredictBody(req.instances, req.parameters, [f"instances[{i}]" for i in range(len(req.instances))])
