"""Request bodies: the pydantic models every JSON body is validated with (and documented by, in the OpenAPI schema),
strict JSON parsing, and the reading of a native / SageMaker / Vertex AI predict request, whatever its content type.

Every route parses JSON here, by one rule: strict JSON (RFC 8259). `null` is the one missing value; the tokens
`NaN`, `Infinity` and `-Infinity` (which Python's parser accepts) and numbers beyond float64's range are a 400
naming the field, as is a string holding a lone UTF-16 surrogate (`"\\ud800"`), which no UTF-8 text can hold;
nesting too deep for the parser is a 400 too."""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

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


V2Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                     "FP64", "BYTES"]


class V2Tensor(_Body):
    name: str
    shape: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    datatype: V2Datatype
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2Request(_Body):
    id: str | None = None
    inputs: list[V2Tensor] = Field(min_length=1, max_length=1, description="one tensor: the batch of inputs")
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class _NotJson:
    """Stands in for a number strict JSON has no place for, until its field is found."""

    def __init__(self, token: str) -> None:
        self.token = token


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # how a surrogate can reach a string: as a \u escape


def parse_json(data: bytes | str, field: str = "body", hint: str = "") -> Any:
    """Strict JSON (see the module's docstring), or an InputError naming the field that breaks it; `hint` follows
    the error of what is not JSON at all."""
    found = []  # any non-finite number: its field is looked up after parsing, when the path is known

    def reject(token: str) -> _NotJson:
        found.append(token)
        return _NotJson(token)

    def decimal(text: str) -> float | _NotJson:
        value = float(text)
        return value if math.isfinite(value) else reject(text)

    def integer(text: str) -> int | _NotJson:
        value = int(text)
        return value if abs(value) <= sys.float_info.max else reject(text)

    try:
        value = json.loads(data, parse_constant=reject, parse_float=decimal, parse_int=integer)
    except RecursionError:
        raise InputError(field, "JSON nested too deeply") from None
    except ValueError as e:
        raise InputError(field, f"not JSON ({e}){hint}") from None
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if found or _SURROGATE_ESCAPE.search(raw):
        _check_strict(value, field)
    return value


def _check_strict(value: Any, field: str) -> None:
    """Walks the parsed value (without recursion: it may be nested as deep as the parser went) for what strict JSON
    has no place for. Paths are named as pydantic's errors are (`instances[0].age`); the body itself as `field`."""
    root = "" if field == "body" else field
    stack = [(value, root)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, _NotJson):
            raise InputError(where or field, f"{value.token[:40]} is not a JSON number (JSON has no NaN or Infinity, "
                                             "and numbers must fit a float64); send null for a missing value")
        if isinstance(value, str) and _LONE_SURROGATE.search(value):
            raise InputError(where or field, "a lone UTF-16 surrogate (\\ud800-\\udfff) is not valid Unicode")
        if isinstance(value, dict):
            for key, v in value.items():
                path = f"{where}.{key}" if where else key
                if _LONE_SURROGATE.search(key):
                    raise InputError(path.encode("utf-8", "backslashreplace").decode(), "a key with a lone UTF-16 "
                                     "surrogate (\\ud800-\\udfff) is not valid Unicode")
                stack.append((v, path))
        elif isinstance(value, list):
            stack.extend((v, f"{where or field}[{i}]") for i, v in enumerate(value))


Model = TypeVar("Model", bound=BaseModel)


async def read_json_body(request: Request, model: type[Model]) -> Model:
    """A JSON body (parsed strictly, see `parse_json`) validated by `model`; errors name the field."""
    data = await request.body()
    if not data:
        raise InputError("body", "empty; send a JSON object")
    try:
        return model.model_validate(parse_json(data))
    except ValidationError as e:
        raise validation_error(e.errors()) from None


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
        parameters = parse_json(parameters, "parameters") if isinstance(parameters, str) else {}
        if not isinstance(parameters, dict):
            raise InputError("parameters", "expected a JSON object")
        fields = ["file"] if len(uploads) == 1 else [f"file[{i}]" for i in range(len(uploads))]
        return PredictBody([await u.read() for u in uploads], parameters, fields)
    data = await request.body()
    if not data:
        raise InputError("body", 'empty; send {"instances": [...]}')
    if ctype.startswith(RAW_TYPES):
        return PredictBody([data], {}, ["body"])  # a raw image (image/png, application/octet-stream) or text
    body = parse_json(data, hint='; send {"instances": [...]} as application/json, a multipart upload in field '
                                 "`file`, or one raw image or text with its content type")
    try:
        req = PredictRequest.model_validate(body)
    except ValidationError as e:
        raise validation_error(e.errors(), ("body",)) from None
    return PredictBody(req.instances, req.parameters, [f"instances[{i}]" for i in range(len(req.instances))])
