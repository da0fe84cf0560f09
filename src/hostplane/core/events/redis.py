"""The Redis event bus: events published by one replica reach every replica.

One pub/sub connection per process carries every local subscription: patterns
are reference-counted and a single reader task fans messages out to the local
subscriber queues, so a thousand browser consoles cost one Redis connection,
not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from hostplane.core.events.bus import DEFAULT_QUEUE_SIZE, Event, Subscription

log = structlog.get_logger(__name__)

SUBSCRIBE_CONFIRM_TIMEOUT = 5.0


class RedisEventBus:
    """Publishes on ``<prefix>:<topic>`` channels; subscribes with PSUBSCRIBE."""

    def __init__(self, url: str, *, prefix: str = "hostplane") -> None:
        self._url = url
        self._prefix = prefix + ":"
        self._redis: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._by_pattern: dict[str, set[Subscription]] = defaultdict(set)
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._redis is None:
            self._redis = aioredis.from_url(self._url, health_check_interval=30)
            self._pubsub = self._redis.pubsub()

    async def close(self) -> None:
        for subscriptions in list(self._by_pattern.values()):
            for subscription in list(subscriptions):
                await subscription.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisEventBus.start() was not called")
        return self._redis

    async def publish(self, event: Event, *, topic: str | None = None) -> None:
        channel = self._prefix + (topic or event.type)
        try:
            await self._client().publish(channel, event.to_json())
        except (RedisError, OSError) as exc:
            raise ConnectionError(f"cannot publish to Redis: {exc}") from exc

    @asynccontextmanager
    async def subscribe(
        self, *patterns: str, max_queue: int = DEFAULT_QUEUE_SIZE
    ) -> AsyncIterator[Subscription]:
        subscription = Subscription(patterns, max_queue, self._release)
        await self._attach(subscription)
        try:
            yield subscription
        finally:
            await subscription.close()

    async def ping(self) -> bool:
        try:
            return bool(await self._client().ping())
        except (RedisError, OSError):
            return False

    async def _attach(self, subscription: Subscription) -> None:
        new_patterns: list[str] = []
        async with self._lock:
            for pattern in subscription.patterns:
                if not self._by_pattern[pattern]:
                    new_patterns.append(pattern)
                self._by_pattern[pattern].add(subscription)
            if not new_patterns:
                return
            loop = asyncio.get_running_loop()
            waits = []
            for pattern in new_patterns:
                future = loop.create_future()
                self._confirmations[self._prefix + pattern] = future
                waits.append(future)
            try:
                await self._pubsub.psubscribe(*(self._prefix + p for p in new_patterns))
            except (RedisError, OSError) as exc:
                for pattern in subscription.patterns:
                    self._by_pattern[pattern].discard(subscription)
                raise ConnectionError(f"cannot subscribe on Redis: {exc}") from exc
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(), name="redis-event-bus-reader")
        # Wait until Redis confirms, so an event published from now on arrives.
        await asyncio.wait_for(asyncio.gather(*waits), SUBSCRIBE_CONFIRM_TIMEOUT)

    async def _release(self, subscription: Subscription) -> None:
        async with self._lock:
            gone = []
            for pattern in subscription.patterns:
                members = self._by_pattern.get(pattern)
                if members is None:
                    continue
                members.discard(subscription)
                if not members:
                    del self._by_pattern[pattern]
                    gone.append(self._prefix + pattern)
            if gone and self._pubsub is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.punsubscribe(*gone)

    async def _read(self) -> None:
        backoff = 0.1
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # redis-py reconnects and re-subscribes on the next read.
                log.warning("event_bus.redis_read_failed", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        pattern = _text(message.get("pattern") or message.get("channel"))
        if kind == "psubscribe":
            future = self._confirmations.pop(pattern, None)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if kind != "pmessage":
            return
        local_pattern = pattern[len(self._prefix) :]
        topic = _text(message["channel"])[len(self._prefix) :]
        try:
            event = Event.from_json(message["data"])
        except (ValueError, KeyError, TypeError):
            log.warning("event_bus.bad_message", channel=topic)
            return
        for subscription in list(self._by_pattern.get(local_pattern, ())):
            # Redis sends one message per matching pattern; deliver through the
            # subscription's first matching pattern only, so no duplicates.
            first = next((p for p in subscription.patterns if _match(topic, p)), None)
            if first == local_pattern:
                subscription.deliver(event)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _match(topic: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(topic, pattern)
