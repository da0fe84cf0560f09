"""The baseline for ``api_throughput.py``: the least an authenticated list route must do.

A bare Starlette app on uvicorn (uvloop + httptools), doing per request what
``GET /api/servers?limit=20`` needs at minimum: verify the Ed25519 JWT with
PyJWT against the panel's published key, look the user up, select the first 20
of their servers with asyncpg, and answer JSON. ``/health`` is a plain JSON
route. Configured by the environment: ``BARE_DATABASE_URL`` (libpq form),
``BARE_JWKS`` (the panel's JWKS document, JSON).

    BARE_DATABASE_URL=... BARE_JWKS=... uvicorn bench.bare_app:app --loop uvloop --http httptools
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_KEYS = {key["kid"]: jwt.PyJWK(key) for key in json.loads(os.environ["BARE_JWKS"])["keys"]}
_pool: asyncpg.Pool | None = None


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _claims(request: Request) -> dict[str, Any] | None:
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        return None
    token = header[7:]
    try:
        kid = jwt.get_unverified_header(token)["kid"]
        claims: dict[str, Any] = jwt.decode(token, _KEYS[kid], algorithms=["EdDSA"])
    except (jwt.PyJWTError, KeyError):
        return None
    return claims


async def servers(request: Request) -> Response:
    claims = _claims(request)
    if claims is None:
        return JSONResponse({"success": False}, status_code=401)
    assert _pool is not None
    async with _pool.acquire() as connection:
        user = await connection.fetchrow(
            "SELECT id, tenant_id, status FROM users WHERE id = $1", claims["sub"]
        )
        if user is None or user["status"] != "active":
            return JSONResponse({"success": False}, status_code=401)
        rows = await connection.fetch(
            "SELECT * FROM servers WHERE tenant_id = $1 AND owner_id = $2 ORDER BY id DESC LIMIT 20",
            user["tenant_id"],
            user["id"],
        )
    data = [{key: _plain(value) for key, value in row.items()} for row in rows]
    return JSONResponse({"success": True, "data": data})


async def health(_: Request) -> Response:
    return JSONResponse({"status": "ok", "service": "bare"})


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    global _pool
    _pool = await asyncpg.create_pool(os.environ["BARE_DATABASE_URL"], min_size=4, max_size=10)
    try:
        yield
    finally:
        await _pool.close()


app = Starlette(
    routes=[Route("/api/servers", servers), Route("/health", health)], lifespan=lifespan
)
