"""Sessions and the unit of work.

One session per request or job. Services ``flush()``; the unit of work commits
on success and rolls back on error. Domain events recorded during the
transaction are published only after it commits, so a rolled-back change
never announces itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hostplane.core.errors import HostplaneError
from hostplane.core.events.bus import Event, EventBus

log = structlog.get_logger(__name__)

_PENDING_EVENTS = "hostplane.pending_events"

SessionFactory = async_sessionmaker[AsyncSession]


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)


def record_event(session: AsyncSession, event: Event, *, topic: str | None = None) -> None:
    """Publish ``event`` once the session's transaction commits."""
    session.info.setdefault(_PENDING_EVENTS, []).append((event, topic))


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
