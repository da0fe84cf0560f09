"""The event bus interface.

A committed change publishes a domain event (``server.created``,
``invoice.paid``). Consumers subscribe to topic patterns with shell-style
wildcards (``server.*``). Delivery is best-effort and in order per publisher:
anything that must happen durably goes through the jobs table instead.

Each subscription has a bounded queue. A subscriber that falls behind loses
the oldest events, never slows the publisher or other subscribers, and can
read how many it lost from :attr:`Subscription.dropped`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from hostplane.core.clock import isoformat, utcnow
from hostplane.core.ids import new_id

if TYPE_CHECKING:
    from hostplane.core.config import Settings

DEFAULT_QUEUE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, named ``resource.verb`` in the past tense."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    tenant_id: str | None = None
    id: str = field(default_factory=new_id)
    occurred_at: datetime = field(default_factory=utcnow)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "type": self.type,
                "tenantId": self.tenant_id,
                "occurredAt": isoformat(self.occurred_at, timespec="microseconds"),
                "data": self.data,
            },
            separators=(",", ":"),
            default=_json_default,
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        body = json.loads(raw)
        return cls(
            type=body["type"],
            data=body.get("data") or {},
            tenant_id=body.get("tenantId"),
            id=body["id"],
            occurred_at=datetime.fromisoformat(body["occurredAt"]),
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return isoformat(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in an event")


class Subscription:
    """Events matching some topic patterns, delivered through a bounded queue."""

    def __init__(
        self, patterns: tuple[str, ...], max_queue: int, on_close: Callable[[Subscription], Any]
    ) -> None:
        self.patterns = patterns
        self.dropped = 0
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=max_queue)
        self._on_close = on_close
        self._closed = False

    def matches(self, topic: str) -> bool:
        return any(fnmatch.fnmatchcase(topic, pattern) for pattern in self.patterns)

    def deliver(self, event: Event) -> None:
        """Queue an event without waiting; drop the oldest when full."""
        if self._closed:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        """The next event (wrap in ``asyncio.timeout`` to bound the wait)."""
        return await self._queue.get()

    def pending(self) -> list[Event]:
        """The events already queued, taken without waiting."""
        events: list[Event] = []
        while not self._queue.empty():
            events.append(self._queue.get_nowait())
        return events

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while not self._closed:
            yield await self._queue.get()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            result = self._on_close(self)
            if asyncio.iscoroutine(result):
                await result


class EventBus(Protocol):
    """Publishes events and hands them to subscribers, across processes or not."""

    async def start(self) -> None:
        """Connect to the backing service, if any."""

    async def close(self) -> None:
        """Close every subscription and connection."""

    async def publish(self, event: Event, *, topic: str | None = None) -> None:
        """Publish ``event`` on ``topic`` (its type when omitted).

        Raises ``ConnectionError`` when the backing service cannot be reached.
        """

    def subscribe(
        self, *patterns: str, max_queue: int = DEFAULT_QUEUE_SIZE
    ) -> AbstractAsyncContextManager[Subscription]:
        """Subscribe to topics matching any of ``patterns``.

        The subscription is active when the context is entered: an event
        published after that reaches it.
        """

    async def ping(self) -> bool:
        """Whether the bus is able to carry events right now."""


def create_bus(settings: Settings) -> EventBus:
    """Redis when ``redis_url`` is set (replicas share events), else in-memory."""
    if settings.redis_url:
        from hostplane.core.events.redis import RedisEventBus

        return RedisEventBus(settings.redis_url, prefix=settings.event_channel_prefix)
    from hostplane.core.events.memory import MemoryEventBus

    return MemoryEventBus()
