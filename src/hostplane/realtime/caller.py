"""The caller behind one client socket, kept current for as long as it is open.

A socket outlives the moment it was authorized: an access token expires, a
session is logged out, a user is banned, an API key is revoked, a role or a
subuser grant shrinks. :class:`LiveCaller` keeps the connection the socket
opened with (and so its credential) and answers "who is this, now?" on every
client message.

The answer is cached, because it is asked per message: the cache holds until
an access event names this caller (``access.revoked``, a role change; see
:data:`ACCESS_TOPICS`), until the token's expiry, or for at most
:data:`MAX_CACHE_AGE` seconds (a safety net should an event be lost with a
Redis connection). After any of these the credential is resolved again from
the database by the runtime's authenticator, exactly as an HTTP request is,
so a stale grant is never honoured once its event has arrived.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import HTTPConnection

from hostplane.core.clock import utcnow
from hostplane.core.errors import HostplaneError
from hostplane.core.events.bus import Event
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.core.security.tokens import TokenInvalid, unverified_claims
from hostplane.identity.access.events import ACCESS_REVOKED
from hostplane.identity.authenticator import API_KEY_PREFIX, bearer_token
from hostplane.identity.roles.service import (
    ROLE_CHANGED_TOPIC,
    ROLE_DELETED_TOPIC,
    ROLES_CHANGED_TOPIC,
)

# Events after which some open socket's caller may hold less than before.
ACCESS_TOPICS = (ACCESS_REVOKED, ROLES_CHANGED_TOPIC, ROLE_CHANGED_TOPIC, ROLE_DELETED_TOPIC)
# Resolve the credential again at least this often, event or not.
MAX_CACHE_AGE = 30.0


class AccessEnded(Exception):
    """The socket's caller is no longer valid: the socket must close."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LiveCaller:
    def __init__(self, runtime: Runtime, connection: HTTPConnection, principal: Principal) -> None:
        self._runtime = runtime
        self._connection = connection
        self._principal = principal
        self._resolved_at = time.monotonic()
        self._stale = False
        # Access tokens end at their ``exp``; API keys' expiry is in the
        # database and is seen on the next resolution.
        self.expires_at: float | None = _expiry(bearer_token(connection) or "")

    @property
    def principal(self) -> Principal:
        """The caller as last resolved (use :meth:`current` to have it checked)."""
        return self._principal

    def seconds_left(self) -> float | None:
        return None if self.expires_at is None else self.expires_at - utcnow().timestamp()

    def next_check_in(self) -> float:
        """Seconds until the cache must be refreshed even without an event."""
        age_left = MAX_CACHE_AGE - (time.monotonic() - self._resolved_at)
        left = self.seconds_left()
        return max(0.0, age_left if left is None else min(age_left, left))

    def invalidate(self) -> None:
        self._stale = True

    def concerns(self, event: Event) -> bool:
        """Whether ``event`` may have taken something from this caller."""
        if event.type in (ROLE_CHANGED_TOPIC, ROLE_DELETED_TOPIC):
            return True  # who holds the role is in the database: re-check everyone
        return _names(event.data, self._principal)

    async def current(self, *, fresh: bool = False) -> Principal:
        """The caller now; raises :class:`AccessEnded` when it is no longer valid.

        ``fresh`` resolves the credential from the database whatever the cache holds.
        """
        left = self.seconds_left()
        if left is not None and left <= 0:
            raise AccessEnded("TOKEN_EXPIRED", "The access token has expired")
        if fresh or self._stale or time.monotonic() - self._resolved_at >= MAX_CACHE_AGE:
            await self._resolve()
        return self._principal

    async def _resolve(self) -> None:
        try:
            principal = await self._runtime.authenticate(self._connection, self._runtime)
        except HostplaneError as exc:
            # A revoked or ended session, a banned or disabled account, a
            # revoked or expired API key.
            raise AccessEnded("ACCESS_REVOKED", exc.message) from exc
        if not principal.is_authenticated:
            raise AccessEnded("ACCESS_REVOKED", "The credential is no longer valid")
        self._principal = principal
        self._resolved_at = time.monotonic()
        self._stale = False


def _names(data: Mapping[str, Any], principal: Principal) -> bool:
    if principal.user_id is not None and data.get("userId") == principal.user_id:
        return True
    if principal.session_id is not None and data.get("sessionId") == principal.session_id:
        return True
    return principal.kind == "api_key" and data.get("apiKeyId") == principal.id


def _expiry(token: str) -> float | None:
    # The signature was verified when the socket opened: the claim can be trusted.
    if not token or token.startswith(API_KEY_PREFIX):
        return None
    try:
        exp = unverified_claims(token).get("exp")
    except TokenInvalid:
        return None
    return float(exp) if isinstance(exp, int | float) else None
