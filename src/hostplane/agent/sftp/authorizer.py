"""SFTP logins, decided by the panel and remembered briefly.

The username is the server's id and the password the user's access token or
API key. The node cannot judge those itself (grants, bans, login sessions
and keys live in the panel's database), so it asks the panel with
``sftp_authorize``. A yes is remembered for :data:`CACHE_SECONDS` per server
and credential (by the credential's hash, never the credential), so a client
that opens several connections in a row asks once; a no is never
remembered, and a panel that cannot be reached means no.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hostplane.agent.asks import Ask, PanelRefused, PanelUnavailable
from hostplane.protocol import SftpAuthorize

logger = logging.getLogger(__name__)

# Short: a ban or a revoked grant should stop new logins almost at once.
CACHE_SECONDS = 10.0
MAX_CACHED = 10_000
MAX_CREDENTIAL_LENGTH = 8192
LOGIN_PERMISSION = "file.sftp"
_SERVER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class SftpGrant:
    """One login's server, user and file permissions on that server."""

    server_id: str
    user_id: str
    permissions: frozenset[str]
    disk_limit_mb: int | None = None
    """The server's disk allocation (MB; none, 0 or negative: unlimited)."""

    def allows(self, *any_of: str) -> bool:
        return any(permission in self.permissions for permission in any_of)


def _grant(server_id: str, data: Any) -> SftpGrant | None:
    if not isinstance(data, dict):
        return None
    user_id, permissions = data.get("userId"), data.get("permissions")
    if not isinstance(user_id, str) or not isinstance(permissions, list):
        return None
    held = frozenset(p for p in permissions if isinstance(p, str))
    if LOGIN_PERMISSION not in held:
        return None
    limit = data.get("diskLimitMb")
    disk_limit_mb = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
    return SftpGrant(
        server_id=server_id, user_id=user_id, permissions=held, disk_limit_mb=disk_limit_mb
    )


class SftpAuthorizer:
    def __init__(
        self,
        ask: Ask,
        *,
        ttl: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask = ask
        self._ttl = ttl
        self._clock = clock
        self._granted: dict[tuple[str, bytes], tuple[SftpGrant, float]] = {}

    async def authorize(
        self, server_id: str, credential: str, *, client_ip: str | None = None
    ) -> SftpGrant | None:
        """The grant of ``credential`` on ``server_id``, or ``None`` for no."""
        if not _SERVER_ID.fullmatch(server_id):
            return None
        if not credential or len(credential) > MAX_CREDENTIAL_LENGTH:
            return None
        key = (server_id, hashlib.sha256(credential.encode("utf-8", "surrogatepass")).digest())
        now = self._clock()
        cached = self._granted.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]

        def question(request_id: str) -> SftpAuthorize:
            return SftpAuthorize(
                request_id=request_id,
                server_id=server_id,
                credential=credential,
                client_ip=client_ip,
            )

        try:
            data = await self._ask(question)
        except PanelRefused as exc:
            logger.info("SFTP login to %s refused by the panel: %s", server_id, exc.code)
            return None
        except PanelUnavailable as exc:
            logger.warning("SFTP login to %s refused: %s", server_id, exc)
            return None
        grant = _grant(server_id, data)
        if grant is None:
            logger.warning(
                "SFTP login to %s refused: the panel's answer was not a grant", server_id
            )
            return None
        self._remember(key, grant, now)
        logger.info("SFTP login to %s by user %s", server_id, grant.user_id)
        return grant

    def _remember(self, key: tuple[str, bytes], grant: SftpGrant, now: float) -> None:
        if len(self._granted) >= MAX_CACHED:
            self._granted = {k: v for k, v in self._granted.items() if v[1] > now}
            while len(self._granted) >= MAX_CACHED:
                # Oldest first: dicts keep insertion order.
                del self._granted[next(iter(self._granted))]
        self._granted[key] = (grant, now + self._ttl)
