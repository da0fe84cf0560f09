"""Turning every failure into the error envelope.

Expected failures (:class:`HostplaneError`) keep their status, code and safe
message. FastAPI's 422 becomes ``VALIDATION_ERROR`` 400 with the field
details. Starlette's own errors (unknown route, wrong method) get the
envelope too. Anything else is caught by :mod:`core.http.middleware`, which
answers ``INTERNAL_ERROR`` 500 with the request id and nothing more.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hostplane.core.errors import HostplaneError
from hostplane.core.http.envelope import error_body

_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    423: "LOCKED",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        # "body" / "query" / "path" first, then the field path.
        source, path = (location[0], location[1:]) if location else ("body", [])
        details.append(
            {
                "field": ".".join(path) or source,
                "in": source,
                "message": error.get("msg", "invalid value"),
                "type": error.get("type", "value_error"),
            }
        )
    return details


async def _hostplane_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, HostplaneError):
        raise exc
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):
        raise exc
    fields = _field_errors(exc)
    summary = "; ".join(f"{item['field']}: {item['message']}" for item in fields[:5])
    return JSONResponse(
        error_body("VALIDATION_ERROR", f"Invalid request: {summary}", {"fields": fields}),
        status_code=400,
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    code = _STATUS_CODES.get(exc.status_code, "HTTP_ERROR")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").capitalize()
    if exc.status_code == 404:
        message = "The requested resource was not found"
    return JSONResponse(
        error_body(code, message),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HostplaneError, _hostplane_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
