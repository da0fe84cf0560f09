"""Sessions and the unit of work.

One session per request or job. Services ``flush()``; the unit of work commits
on success and rolls back on error. Domain events recorded during the
transaction are published only after it commits, so a rolled-back change
never announces itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from hostplane.core.errors import HostplaneError
from hostplane.core.events.bus import Event, EventBus

log = structlog.get_logger(__name__)

_PENDING_EVENTS = "hostplane.pending_events"

SessionFactory = async_sessionmaker[AsyncSession]


class RetryingSession(AsyncSession):
    """A session that retries its transaction's first statement once on a dead connection.

    Pooled connections are not pinged before use (a round trip per checkout);
    a connection the server closed meanwhile fails on its first statement
    instead. SQLAlchemy then invalidates it and every older pooled connection,
    and since nothing ran in the transaction yet, the statement can simply run
    again on a fresh connection. Later statements are never retried: the
    transaction's earlier work died with the connection.
    """

    async def _first_retried(
        self, method: Callable[..., Awaitable[Any]], *args: Any, **kw: Any
    ) -> Any:
        if self.in_transaction():
            return await method(*args, **kw)
        try:
            return await method(*args, **kw)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.warning("db.connection_lost_retrying", error=type(exc.orig).__name__)
            await self.rollback()
            return await method(*args, **kw)

    async def execute(self, *args: Any, **kw: Any) -> Any:
        return await self._first_retried(super().execute, *args, **kw)

    async def scalar(self, *args: Any, **kw: Any) -> Any:
        return await self._first_retried(super().scalar, *args, **kw)

    async def scalars(self, *args: Any, **kw: Any) -> Any:
        return await self._first_retried(super().scalars, *args, **kw)

    async def get(self, *args: Any, **kw: Any) -> Any:
        return await self._first_retried(super().get, *args, **kw)


_SETTINGS = "hostplane.settings"


def create_session_factory(engine: AsyncEngine, *, settings: Any = None) -> SessionFactory:
    """Sessions on ``engine``; ``settings`` rides along for services that need a
    process setting (the credits currency) without a runtime at hand."""
    return async_sessionmaker(
        engine,
        class_=RetryingSession,
        expire_on_commit=False,
        autoflush=True,
        info={_SETTINGS: settings} if settings is not None else None,
    )


def session_settings(session: AsyncSession | Session) -> Any:
    """The settings the session's factory was made with, or ``None``."""
    return session.info.get(_SETTINGS)


def record_event(
    session: AsyncSession | Session, event: Event, *, topic: str | None = None
) -> None:
    """Publish ``event`` once the session's transaction commits."""
    session.info.setdefault(_PENDING_EVENTS, []).append((event, topic))


def pending_events(session: AsyncSession | Session) -> list[Event]:
    """The events ``session`` will publish when it commits (to read or complete)."""
    return [event for event, _topic in session.info.get(_PENDING_EVENTS, [])]


async def publish_pending(session: AsyncSession, bus: EventBus) -> None:
    """Publish what the committed transaction recorded.

    A bus failure is logged, not raised: the change is already committed, and
    events are best-effort by design (durable work goes through jobs).
    """
    pending: list[tuple[Event, str | None]] = session.info.pop(_PENDING_EVENTS, [])
    for event, topic in pending:
        try:
            await bus.publish(event, topic=topic)
        except ConnectionError as exc:
            log.error(
                "events.publish_failed", event_type=event.type, event_id=event.id, error=str(exc)
            )


def discard_pending(session: AsyncSession) -> None:
    session.info.pop(_PENDING_EVENTS, None)


# Work that must join every transaction right before it commits (the audit
# chain seals the request's entries here, under the same transaction).
BeforeCommit = Callable[[AsyncSession], Awaitable[None]]


@asynccontextmanager
async def unit_of_work(
    factory: SessionFactory, bus: EventBus, *, before_commit: Sequence[BeforeCommit] = ()
) -> AsyncIterator[AsyncSession]:
    """A session whose transaction commits when the block succeeds."""
    async with factory() as session:
        try:
            yield session
            for hook in before_commit:
                await hook(session)
            await session.commit()
        except HostplaneError as exc:
            if not exc.keep_changes:
                discard_pending(session)
                await session.rollback()
                raise
            await session.commit()
            await publish_pending(session, bus)
            raise
        except BaseException:
            discard_pending(session)
            await session.rollback()
            raise
        await publish_pending(session, bus)
