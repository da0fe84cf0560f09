"""The response envelope of every ``/api`` route.

Success: ``{"success": true, "data": ..., "pagination"?: {...}}``.
Error: ``{"success": false, "error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from hostplane.core.pagination import PageMeta

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    success: Literal[True] = True
    data: T


class PageEnvelope(BaseModel, Generic[T]):
    success: Literal[True] = True
    data: list[T]
    pagination: PageMeta


class Empty(BaseModel):
    """``{"success": true}`` for operations that return nothing else."""

    success: Literal[True] = True


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorEnvelope(BaseModel):
    success: Literal[False] = False
    error: ErrorBody


def ok(data: T) -> Envelope[T]:
    return Envelope[T](data=data)


def page(items: Sequence[T], meta: PageMeta) -> PageEnvelope[T]:
    return PageEnvelope[T](data=list(items), pagination=meta)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return ErrorEnvelope(error=ErrorBody(code=code, message=message, details=details)).model_dump(
        mode="json"
    )


# Added to every route's OpenAPI entry so clients see the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "Invalid input (VALIDATION_ERROR)"},
    401: {"model": ErrorEnvelope, "description": "Missing or invalid credentials"},
    403: {"model": ErrorEnvelope, "description": "Insufficient permissions"},
    404: {"model": ErrorEnvelope, "description": "Not found"},
    429: {"model": ErrorEnvelope, "description": "Rate limit exceeded"},
    500: {"model": ErrorEnvelope, "description": "Internal error (details hold the request id)"},
}
