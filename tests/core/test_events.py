"""The event bus: in-memory and Redis, same behaviour."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.app import build_runtime, create_app
from hostplane.core.db.session import record_event, unit_of_work
from hostplane.core.events.bus import Event, EventBus
from hostplane.core.events.memory import MemoryEventBus
from hostplane.core.events.redis import RedisEventBus
from hostplane.core.ids import new_id
from hostplane.core.runtime import Runtime
from hostplane.identity.tenants.models import Tenant
from tests.conftest import make_settings
from tests.support.services import require_redis


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    instance: EventBus
    if request.param == "memory":
        instance = MemoryEventBus()
    else:
        instance = RedisEventBus(await require_redis(), prefix=f"test-{new_id()}")
    await instance.start()
    yield instance
    await instance.close()


async def next_event(subscription: object, timeout: float = 5.0) -> Event:
    async with asyncio.timeout(timeout):
        return await subscription.get()  # type: ignore[attr-defined, no-any-return]


async def test_subscribers_get_events_matching_their_patterns(bus: EventBus) -> None:
    async with bus.subscribe("server.*") as servers, bus.subscribe("invoice.paid") as invoices:
        await bus.publish(Event("server.created", {"id": "s1"}))
        await bus.publish(Event("invoice.paid", {"id": "i1"}))
        await bus.publish(Event("ticket.created", {"id": "t1"}))
        got = await next_event(servers)
        assert (got.type, got.data) == ("server.created", {"id": "s1"})
        assert (await next_event(invoices)).data == {"id": "i1"}
        with pytest.raises(TimeoutError):
            await next_event(servers, timeout=0.2)


async def test_overlapping_patterns_deliver_once(bus: EventBus) -> None:
    async with bus.subscribe("server.*", "server.created") as subscription:
        await bus.publish(Event("server.created"))
        await next_event(subscription)
        with pytest.raises(TimeoutError):
            await next_event(subscription, timeout=0.2)


async def test_events_keep_their_identity_across_the_bus(bus: EventBus) -> None:
    event = Event("server.updated", {"status": "running", "n": 3}, tenant_id="t1")
    async with bus.subscribe("server.updated") as subscription:
        await bus.publish(event)
        received = await next_event(subscription)
    assert received == event


async def test_explicit_topics_route_independently_of_type(bus: EventBus) -> None:
    async with bus.subscribe("console.srv1") as subscription:
        await bus.publish(Event("server.log", {"line": "hello"}), topic="console.srv1")
        assert (await next_event(subscription)).data == {"line": "hello"}


async def test_a_slow_subscriber_loses_oldest_events_and_knows_how_many(bus: EventBus) -> None:
    async with bus.subscribe("flood.*", max_queue=10) as slow, bus.subscribe("flood.*") as fast:
        for n in range(25):
            await bus.publish(Event("flood.line", {"n": n}))
        received_fast = [(await next_event(fast)).data["n"] for _ in range(25)]
        assert received_fast == list(range(25))
        assert slow.dropped == 15
        assert [(await next_event(slow)).data["n"] for _ in range(10)] == list(range(15, 25))


async def test_closed_subscriptions_stop_receiving(bus: EventBus) -> None:
    async with bus.subscribe("a.*") as first:
        pass
    async with bus.subscribe("a.*") as second:
        await bus.publish(Event("a.b"))
        await next_event(second)
    with pytest.raises(TimeoutError):
        await next_event(first, timeout=0.1)


async def test_events_recorded_in_a_transaction_publish_only_after_commit(runtime: Runtime) -> None:
    async with runtime.bus.subscribe("tenant.*") as subscription:
        with pytest.raises(RuntimeError):
            async with unit_of_work(runtime.sessions, runtime.bus) as session:
                session.add(Tenant(name="x", slug="rolled-back"))
                record_event(session, Event("tenant.created", {"slug": "rolled-back"}))
                raise RuntimeError("abort")
        async with unit_of_work(runtime.sessions, runtime.bus) as session:
            session.add(Tenant(name="y", slug="kept"))
            record_event(session, Event("tenant.created", {"slug": "kept"}))
            await session.flush()
            with pytest.raises(TimeoutError):  # not before the commit
                await next_event(subscription, timeout=0.05)
        assert (await next_event(subscription)).data == {"slug": "kept"}
        with pytest.raises(TimeoutError):
            await next_event(subscription, timeout=0.1)


async def test_redis_carries_events_between_two_app_instances(
    tmp_path: Path, db: AsyncSession
) -> None:
    """One replica publishes, another one's subscriber receives."""
    redis_url = await require_redis()
    prefix = f"test-{new_id()}"
    settings = make_settings(tmp_path, redis_url=redis_url, event_channel_prefix=prefix)
    runtimes = [build_runtime(settings), build_runtime(settings)]
    apps = [create_app(settings, runtime=r) for r in runtimes]
    async with apps[0].router.lifespan_context(apps[0]), apps[1].router.lifespan_context(apps[1]):
        assert isinstance(runtimes[0].bus, RedisEventBus) and runtimes[0].bus is not runtimes[1].bus
        async with runtimes[1].bus.subscribe("server.*") as subscription:
            async with runtimes[0].unit_of_work() as session:
                record_event(session, Event("server.created", {"id": "srv-1"}))
            received = await next_event(subscription)
    assert received.type == "server.created"
    assert received.data == {"id": "srv-1"}


async def test_redis_bus_reports_publish_failures_as_connection_errors() -> None:
    bus = RedisEventBus("redis://127.0.0.1:1/0", prefix="nowhere")
    await bus.start()
    try:
        assert await bus.ping() is False
        with pytest.raises(ConnectionError):
            await bus.publish(Event("x.y"))
    finally:
        await bus.close()
