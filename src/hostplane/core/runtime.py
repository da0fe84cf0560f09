"""The long-lived objects of one running process, built once by the app factory."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from hostplane.core.config import Settings
from hostplane.core.db.session import BeforeCommit, SessionFactory, unit_of_work
from hostplane.core.events.bus import EventBus
from hostplane.core.metrics import Metrics
from hostplane.core.principal import ANONYMOUS, Principal
from hostplane.core.principal_cache import PrincipalCache
from hostplane.core.ratelimit import RateLimiter

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

Authenticator = Callable[["HTTPConnection", "Runtime"], Awaitable[Principal]]


async def anonymous_only(_connection: HTTPConnection, _runtime: Runtime) -> Principal:
    """The authenticator until the identity domain installs its own."""
    return ANONYMOUS


@dataclass
class Runtime:
    """Settings, database, bus and the hooks domains plug in."""

    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    bus: EventBus
    metrics: Metrics = field(default_factory=Metrics)
    # Sessions for work that only reads (GET requests): on SQLite they do not
    # take the write lock. On PostgreSQL they are the same as ``sessions``.
    read_sessions: SessionFactory | None = None
    started_at: float = field(default_factory=time.monotonic)
    authenticate: Authenticator = anonymous_only
    before_commit: list[BeforeCommit] = field(default_factory=list)
    rate_limiter: RateLimiter = field(default_factory=RateLimiter)
    # Callers of HTTP requests by credential; the identity domain keeps it
    # current. Disabled (ttl 0) unless the app factory sets one up.
    principal_cache: PrincipalCache = field(
        default_factory=lambda: PrincipalCache(ttl=0, max_entries=1)
    )
    # Long-lived state a domain keeps per process (the identity domain's key
    # ring, say), under the domain's own key. Core never looks inside.
    extensions: dict[str, object] = field(default_factory=dict)

    def unit_of_work(self, *, read_only: bool = False) -> AbstractAsyncContextManager[AsyncSession]:
        factory = (
            self.read_sessions if read_only and self.read_sessions is not None else self.sessions
        )
        return unit_of_work(factory, self.bus, before_commit=self.before_commit)

    @property
    def uptime_seconds(self) -> int:
        return int(time.monotonic() - self.started_at)
