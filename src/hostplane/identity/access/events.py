"""``access.revoked``: the announcement that some caller's access shrank.

Published after commit by the services that take access away (a ban, a
logout or revoked session, a revoked API key, a removed or narrowed
subuser). Consumers that hold access open for a long time (the ``/ws``
gateway's client sockets) re-check the callers it names against the
database and end what is no longer allowed. The event names who is
affected, never what they may still do: the database stays the only
authority, so a late or duplicated event cannot grant anything.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.db.session import record_event
from hostplane.core.events.bus import Event

ACCESS_REVOKED = "access.revoked"


def announce_revoked(
    session: AsyncSession,
    *,
    reason: str,
    tenant_id: str | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
    api_key_id: str | None = None,
    server_id: str | None = None,
) -> None:
    """Publish ``access.revoked`` once ``session`` commits (nothing if it rolls back)."""
    data = {
        key: value
        for key, value in (
            ("userId", user_id),
            ("sessionId", session_id),
            ("apiKeyId", api_key_id),
            ("serverId", server_id),
        )
        if value is not None
    }
    record_event(session, Event(ACCESS_REVOKED, {"reason": reason, **data}, tenant_id=tenant_id))
