"""The delivery worker: transactional events, retries, 410, auto-disable, order, Retry-After."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from hostplane.core.clock import utcnow
from hostplane.core.runtime import Runtime
from hostplane.core.security.crypto import SecretBox
from hostplane.identity.tenants.service import ensure_default_tenant
from hostplane.platform.webhooks import service
from hostplane.platform.webhooks.dispatcher import WebhookDispatcher, next_delay, secret_box
from hostplane.platform.webhooks.events import emit
from hostplane.platform.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from tests.platform.webhooks.helpers import deliver_all
from tests.support.webhooks import Answer, Receiver, receiver


async def _tenant(runtime: Runtime) -> str:
    async with runtime.unit_of_work() as session:
        return (await ensure_default_tenant(session)).id


async def _endpoint(runtime: Runtime, tenant_id: str, hook: Receiver, events: list[str]) -> str:
    async with runtime.unit_of_work() as session:
        issued = await service.create_endpoint(
            session,
            tenant_id=tenant_id,
            url=hook.url,
            events=events,
            enabled=True,
            description=None,
            settings=runtime.settings.webhooks,
            box=secret_box(runtime),
        )
    assert issued.secret is not None
    hook.secrets = [issued.secret]
    return issued.endpoint.id


async def _emit(runtime: Runtime, tenant_id: str, event: str, **data: object) -> None:
    async with runtime.unit_of_work() as session:
        emit(session, event, dict(data), tenant_id)


async def _attempts(runtime: Runtime) -> list[WebhookAttempt]:
    async with runtime.unit_of_work() as session:
        rows = await session.scalars(
            select(WebhookAttempt).order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
        )
        return list(rows.all())


async def test_a_committed_event_arrives_signed_and_a_rolled_back_one_never_does(
    runtime: Runtime,
) -> None:
    tenant_id = await _tenant(runtime)
    async with receiver() as hook:
        await _endpoint(runtime, tenant_id, hook, ["server.*"])
        await _emit(runtime, tenant_id, "server.created", id="s1", name="One", status="stopped")

        class Boom(Exception):
            pass

        try:
            async with runtime.unit_of_work() as session:
                emit(session, "server.created", {"id": "s2"}, tenant_id)
                raise Boom
        except Boom:
            pass
        # Not subscribed: nothing is written for it.
        await _emit(runtime, tenant_id, "user.created", id="u1")
        await deliver_all(runtime)

    assert [r.payload["data"]["id"] for r in hook.received] == ["s1"]
    received = hook.received[0]
    assert received.verified
    assert received.payload["event"] == "server.created"
    assert received.payload["data"] == {"id": "s1", "name": "One", "status": "stopped"}
    assert received.payload["timestamp"].endswith("Z")
    assert received.headers["Content-Type"] == "application/json"
    async with runtime.unit_of_work() as session:
        events = (await session.scalars(select(WebhookEvent))).all()
    assert [e.type for e in events] == ["server.created"]
    assert received.headers["webhook-id"] == events[0].id


async def test_500_twice_then_200_is_three_attempts_and_one_success(runtime: Runtime) -> None:
    tenant_id = await _tenant(runtime)
    async with receiver(script=[Answer(500), Answer(503)]) as hook:
        endpoint_id = await _endpoint(runtime, tenant_id, hook, ["backup.completed"])
        await _emit(runtime, tenant_id, "backup.completed", id="b1")
        await deliver_all(runtime)
    assert len(hook.received) == 3 and all(r.verified for r in hook.received)
    # The same message each time: one id, re-signed per attempt.
    assert len({r.headers["webhook-id"] for r in hook.received}) == 1
    attempts = await _attempts(runtime)
    assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, 503), (3, 200)]
    async with runtime.unit_of_work() as session:
        delivery = (await session.scalars(select(WebhookDelivery))).one()
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
    assert delivery.status == "succeeded" and delivery.attempts == 3
    assert endpoint is not None and endpoint.enabled and endpoint.consecutive_failures == 0


async def test_410_disables_the_endpoint_and_ends_what_it_is_owed(runtime: Runtime) -> None:
    tenant_id = await _tenant(runtime)
    async with receiver(default=Answer(410, "gone")) as hook:
        endpoint_id = await _endpoint(runtime, tenant_id, hook, ["*"])
        await _emit(runtime, tenant_id, "server.created", id="s1")
        await _emit(runtime, tenant_id, "server.updated", id="s1")
        await deliver_all(runtime)
    assert len(hook.received) == 1
    async with runtime.unit_of_work() as session:
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
        deliveries = (await session.scalars(select(WebhookDelivery).order_by("id"))).all()
    assert endpoint is not None and not endpoint.enabled and endpoint.disabled_reason == "gone"
    assert [d.status for d in deliveries] == ["failed", "failed"]
    assert deliveries[0].last_status_code == 410 and deliveries[0].attempts == 1
    assert deliveries[1].attempts == 0 and "disabled" in (deliveries[1].last_error or "")
    # A disabled endpoint gets no new deliveries.
    await _emit(runtime, tenant_id, "server.deleted", id="s1")
    async with runtime.unit_of_work() as session:
        assert len((await session.scalars(select(WebhookDelivery))).all()) == 2


async def test_consecutive_failed_events_disable_the_endpoint(runtime: Runtime) -> None:
    runtime.settings.webhooks.retry_schedule_seconds = [0.01]
    runtime.settings.webhooks.max_consecutive_failures = 2
    tenant_id = await _tenant(runtime)
    async with receiver(default=Answer(500)) as hook:
        endpoint_id = await _endpoint(runtime, tenant_id, hook, ["*"])
        for n in range(3):
            await _emit(runtime, tenant_id, "server.updated", id=f"s{n}")
        await deliver_all(runtime)
    # Two events, two attempts each; the third event is ended unsent.
    assert len(hook.received) == 4
    async with runtime.unit_of_work() as session:
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
        statuses = [d.status for d in (await session.scalars(select(WebhookDelivery))).all()]
    assert endpoint is not None and not endpoint.enabled
    assert endpoint.disabled_reason == "failing" and statuses == ["failed"] * 3


async def test_a_later_event_waits_for_an_earlier_one_that_is_retrying(runtime: Runtime) -> None:
    tenant_id = await _tenant(runtime)
    async with receiver(script=[Answer(500), Answer(500)]) as hook:
        await _endpoint(runtime, tenant_id, hook, ["*"])
        for n in range(3):
            await _emit(runtime, tenant_id, "server.updated", id=f"s{n}")
        await deliver_all(runtime)
    order = [r.payload["data"]["id"] for r in hook.received]
    assert order == ["s0", "s0", "s0", "s1", "s2"]


async def test_retry_after_is_honoured_and_redirects_are_not_followed(runtime: Runtime) -> None:
    tenant_id = await _tenant(runtime)
    async with receiver(
        script=[Answer(302, headers={"Location": "http://127.0.0.1:1/elsewhere"})],
        default=Answer(429, headers={"Retry-After": "120"}),
    ) as hook:
        await _endpoint(runtime, tenant_id, hook, ["*"])
        await _emit(runtime, tenant_id, "server.updated", id="s1")
        dispatcher = WebhookDispatcher(runtime)
        await dispatcher.run_until_idle()
        await asyncio.sleep(0.1)
        await dispatcher.run_until_idle()
    assert len(hook.received) == 2
    async with runtime.unit_of_work() as session:
        delivery = (await session.scalars(select(WebhookDelivery))).one()
    attempts = await _attempts(runtime)
    assert attempts[0].status_code == 302 and attempts[0].error == "Redirects are not followed"
    assert delivery.status == "pending" and delivery.last_status_code == 429
    assert delivery.next_attempt_at >= utcnow() + timedelta(seconds=110)


async def test_a_killed_workers_lease_expires_and_another_worker_delivers(
    runtime: Runtime,
) -> None:
    tenant_id = await _tenant(runtime)
    async with receiver() as hook:
        await _endpoint(runtime, tenant_id, hook, ["*"])
        await _emit(runtime, tenant_id, "server.updated", id="s1")
        from hostplane.platform.webhooks import repository

        async with runtime.unit_of_work() as session:
            # Long enough for the check below to run inside it on a busy machine.
            taken = await repository.claim(session, worker_id="dead", limit=5, lease_seconds=3)
        assert len(taken) == 1
        # The head is leased: nobody else may send it (or anything after it).
        assert await WebhookDispatcher(runtime).run_until_idle() == 0
        await asyncio.sleep(3.1)
        await deliver_all(runtime)
    assert len(hook.received) == 1


def test_the_schedule_has_jitter_and_an_end() -> None:
    schedule = [5.0, 300.0]
    delays = {round(next_delay(1, schedule, 0.1, None) or 0, 3) for _ in range(20)}
    assert all(4.5 <= d <= 5.5 for d in delays) and len(delays) > 1
    assert next_delay(3, schedule, 0.1, None) is None
    assert next_delay(1, schedule, 0.0, 60) == 60
    assert next_delay(1, schedule, 0.0, 10**9) == 86400


def test_secrets_are_sealed_for_their_purpose(runtime: Runtime) -> None:
    box = secret_box(runtime)
    sealed = box.seal(b"whsec_abc")
    assert box.open(sealed) == b"whsec_abc"
    other = SecretBox(runtime.settings.secret_key.get_secret_value(), "totp-secrets")
    try:
        other.open(sealed)
    except ValueError:
        pass
    else:  # pragma: no cover
        raise AssertionError("opened under another purpose")
