"""The in-process event bus of the embedded default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from hostplane.core.events.bus import DEFAULT_QUEUE_SIZE, Event, Subscription


class MemoryEventBus:
    """Delivers events to subscribers in the same process."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()

    async def publish(self, event: Event, *, topic: str | None = None) -> None:
        topic = topic or event.type
        for subscription in list(self._subscriptions):
            if subscription.matches(topic):
                subscription.deliver(event)

    @asynccontextmanager
    async def subscribe(
        self, *patterns: str, max_queue: int = DEFAULT_QUEUE_SIZE
    ) -> AsyncIterator[Subscription]:
        subscription = Subscription(patterns, max_queue, self._subscriptions.discard)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            await subscription.close()

    async def ping(self) -> bool:
        return True
