"""One pure-ASGI middleware for what every HTTP request needs.

It assigns the request id (or keeps a sane one from ``X-Request-ID``), binds it
to the log context, measures the request for Prometheus by route template,
writes one log line per request, and is the last line of defence: an
exception nobody handled is logged with its traceback and answered with
``INTERNAL_ERROR`` 500 carrying only the request id.
"""

from __future__ import annotations

import json
import re
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostplane.core.http.envelope import error_body
from hostplane.core.ids import new_id
from hostplane.core.metrics import UNMATCHED_ROUTE, Metrics

log = structlog.get_logger("hostplane.http")

_INCOMING_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
REQUEST_ID_HEADER = b"x-request-id"


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            return text if _INCOMING_ID.match(text) else None
    return None


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        if scope["type"] == "websocket":
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                await self.app(scope, receive, send)
            return

        status = 500
        response_started = False
        header = (REQUEST_ID_HEADER, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    header,
                    *_rate_limit_headers(scope, message),
                ]
            await send(message)

        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                log.exception("http.unhandled_error", method=scope["method"], path=scope["path"])
                status = 500
                if response_started:
                    # Headers are gone; the server closes the connection.
                    raise
                await _send_internal_error(send, request_id, header)
            finally:
                seconds = time.perf_counter() - started
                route = route_template(scope)
                self.metrics.observe_request(
                    method=scope["method"], route=route, status=status, seconds=seconds
                )
                log.info(
                    "http.request",
                    method=scope["method"],
                    path=scope["path"],
                    route=route,
                    status=status,
                    duration_ms=round(seconds * 1000, 2),
                )


def _rate_limit_headers(scope: Scope, message: Message) -> list[tuple[bytes, bytes]]:
    """``X-RateLimit-*`` on every response of a limited route, errors included.

    The limiter leaves its verdict on the request state; responses built by
    FastAPI get the headers already, so only missing ones are added.
    """
    verdict = scope.get("state", {}).get("rate_limit")
    if verdict is None:
        return []
    present = {name.lower() for name, _ in message.get("headers", ())}
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in verdict.headers().items()
        if name.lower().encode("latin-1") not in present
    ]


async def _send_internal_error(send: Send, request_id: str, header: tuple[bytes, bytes]) -> None:
    body = json.dumps(
        error_body("INTERNAL_ERROR", "An internal error occurred", {"requestId": request_id})
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                header,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
