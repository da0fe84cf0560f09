"""Callers for API tests before (and besides) real login.

``TokenBook`` stands in for the identity domain's authenticator: it maps
opaque bearer tokens to principals, so a test can act as any caller. Tests of
the identity domain itself use real login instead.
"""

from __future__ import annotations

import secrets

from starlette.requests import HTTPConnection

from hostplane.core.principal import ANONYMOUS, Principal
from hostplane.core.runtime import Authenticator, Runtime


class TokenBook:
    def __init__(self, fallback: Authenticator | None = None) -> None:
        self._principals: dict[str, Principal] = {}
        # Tokens the book did not issue go to the real authenticator, so a
        # test can mix book principals with real logins.
        self._fallback = fallback

    def issue(self, principal: Principal) -> str:
        token = secrets.token_urlsafe(16)
        self._principals[token] = principal
        return token

    async def authenticate(self, connection: HTTPConnection, _runtime: Runtime) -> Principal:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        known = self._principals.get(token) if scheme.lower() == "bearer" else None
        if known is not None:
            return known
        if self._fallback is not None:
            return await self._fallback(connection, _runtime)
        return ANONYMOUS


def operator(tenant_id: str | None = None, *permissions: str) -> Principal:
    """A user principal with the given global permissions (``*`` by default)."""
    return Principal(
        kind="user", id="op-user", tenant_id=tenant_id, permissions=frozenset(permissions or ("*",))
    )
