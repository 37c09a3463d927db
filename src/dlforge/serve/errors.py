"""Errors as JSON `{"error": "<field>: <what is wrong>"}` with their 4xx status, never a traceback: an unexpected
failure is logged here and answered with a bare 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from dlforge.errors import DlforgeError, InputError

log = logging.getLogger("dlforge")


def validation_error(errors: list[dict[str, Any]], prefix: tuple = ()) -> InputError:
    """pydantic's first error as an InputError naming the field, e.g. `instances[2].shape`."""
    err = errors[0]
    loc = [str(x) for x in (*prefix, *err["loc"]) if x != "body"] or ["body"]
    where = "".join(f"[{x}]" if x.isdigit() else f".{x}" for x in loc).lstrip(".")
    return InputError(where, err["msg"].lower(), 422)


def error_response(error: str, status: int, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """`{"error": ..., "field": ...}`; text a client sent that UTF-8 cannot hold (a lone surrogate) is escaped, so
    quoting the client's input never fails the answer."""
    body = {"error": _utf8(error)} | ({"field": _utf8(field)} if field is not None else {})
    return JSONResponse(body, status, headers=headers)


def _utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode()


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def input_error(request: Request, e: InputError) -> JSONResponse:
        return error_response(str(e), e.status, e.field)

    @app.exception_handler(DlforgeError)
    async def user_error(request: Request, e: DlforgeError) -> JSONResponse:
        return error_response(str(e), 400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        err = validation_error(list(e.errors()))
        return error_response(str(err), 422, err.field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return error_response(str(e.detail), e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def crash(request: Request, e: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal server error (logged on the server)"}, 500)
