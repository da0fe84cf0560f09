"""The delivery loop that runs in every worker process (``hostplane worker``, ``up``).

It claims due deliveries (see :func:`repository.claim`), sends each with a
bounded timeout, and records the attempt. A failed attempt (no answer, a
timeout, any status but 2xx) is retried after the next delay of the
schedule (``webhooks.retry_schedule_seconds``, with jitter), or later if the
receiver's ``Retry-After`` asks for more; when the schedule is spent the
delivery fails for good. 410 fails it at once and disables the endpoint; so
does a run of ``webhooks.max_consecutive_failures`` events in a row that
failed for good. Every outcome is written only while this worker still holds
the delivery's lease, so a worker that was presumed dead cannot overwrite the
work of the one that took over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from datetime import timedelta

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.db.session import record_event
from hostplane.core.events.bus import Event
from hostplane.core.ids import new_id
from hostplane.core.runtime import Runtime
from hostplane.core.security.crypto import SecretBox
from hostplane.platform.webhooks import delivery as http
from hostplane.platform.webhooks import repository
from hostplane.platform.webhooks.events import QUEUED_TOPIC
from hostplane.platform.webhooks.models import WebhookAttempt, WebhookEndpoint
from hostplane.platform.webhooks.repository import ClaimedDelivery

log = structlog.get_logger(__name__)

SECRET_PURPOSE = "webhook-secrets"  # noqa: S105 - a key-derivation label, not a secret
SHUTDOWN_GRACE_SECONDS = 15.0
# Retry-After beyond this is not believed (a receiver cannot park a queue for weeks).
MAX_RETRY_AFTER_SECONDS = 86400.0


def secret_box(runtime: Runtime) -> SecretBox:
    return SecretBox(runtime.settings.secret_key.get_secret_value(), SECRET_PURPOSE)


def next_delay(
    attempt: int, schedule: list[float], jitter: float, retry_after: float | None
) -> float | None:
    """Seconds before the attempt after ``attempt`` (1-based), or None when none is left."""
    if attempt > len(schedule):
        return None
    base = schedule[attempt - 1]
    delay = base * (1 + random.uniform(-jitter, jitter))  # noqa: S311 - jitter, not security
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return max(delay, 0.0)


class WebhookDispatcher:
    def __init__(self, runtime: Runtime, *, worker_id: str | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.webhooks
        self.worker_id = (
            worker_id or f"{socket.gethostname()}:{os.getpid()}:webhooks:{new_id()[-6:]}"
        )
        self._box = secret_box(runtime)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; then let running sends finish (bounded)."""
        async with (
            http.new_client() as client,
            self.runtime.bus.subscribe(QUEUED_TOPIC, max_queue=16) as queued,
        ):
            helpers = [
                asyncio.create_task(self._forward(queued)),
                asyncio.create_task(self._wake_on(stop)),
            ]
            try:
                await self._loop(client, stop)
            finally:
                for task in helpers:
                    task.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
                if self._running:
                    _done, pending = await asyncio.wait(
                        list(self._running.values()), timeout=SHUTDOWN_GRACE_SECONDS
                    )
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)

    async def run_until_idle(self) -> int:
        """Send what is due now, again until nothing is; return how many attempts ran."""
        ran = 0
        async with http.new_client() as client:
            while True:
                claimed = await self._claim(self.settings.concurrency)
                if not claimed:
                    return ran
                await asyncio.gather(*(self._deliver(client, item) for item in claimed))
                ran += len(claimed)

    async def _loop(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            self._wakeup.clear()
            free = self.settings.concurrency - len(self._running)
            claimed: list[ClaimedDelivery] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("webhooks.claim_failed", attempt=failures)
                for item in claimed:
                    self._spawn(client, item)
            if claimed and len(claimed) == free:
                continue
            delay = self.settings.poll_interval_seconds * (2 ** min(failures, 6))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), delay)

    async def _forward(self, queued: object) -> None:
        async for _event in queued:  # type: ignore[attr-defined]
            self._wakeup.set()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wakeup.set()

    async def _claim(self, limit: int) -> list[ClaimedDelivery]:
        async with self.runtime.unit_of_work() as session:
            return await repository.claim(
                session,
                worker_id=self.worker_id,
                limit=limit,
                lease_seconds=self.settings.lease_seconds,
            )

    def _spawn(self, client: httpx.AsyncClient, item: ClaimedDelivery) -> None:
        task = asyncio.create_task(self._deliver(client, item), name=f"webhook:{item.id}")
        self._running[item.id] = task

        def _finished(_task: asyncio.Task[None]) -> None:
            self._running.pop(item.id, None)
            self._wakeup.set()

        task.add_done_callback(_finished)

    def _secrets(self, item: ClaimedDelivery) -> list[str]:
        current = [self._box.open(item.secret_sealed).decode()]
        if (
            item.previous_secret_sealed is not None
            and item.previous_secret_expires_at is not None
            and item.previous_secret_expires_at > utcnow()
        ):
            current.append(self._box.open(item.previous_secret_sealed).decode())
        return current

    async def _deliver(self, client: httpx.AsyncClient, item: ClaimedDelivery) -> None:
        with structlog.contextvars.bound_contextvars(
            delivery_id=item.id, endpoint_id=item.endpoint_id, attempt=item.attempt
        ):
            try:
                outcome = await http.send(
                    client,
                    url=item.url,
                    message_id=item.event_id,
                    body=http.body_of(item.event_type, item.event_data, item.event_created_at),
                    secrets=self._secrets(item),
                    timeout_seconds=self.settings.timeout_seconds,
                    allow_private=self.settings.allow_private_destinations,
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhooks.send_failed")
                outcome = http.Outcome(None, 0, None, "The delivery failed unexpectedly")
            try:
                await self._record(item, outcome)
            except Exception:
                # The lease runs out and another attempt follows; nothing is lost.
                log.exception("webhooks.record_failed")

    async def _record(self, item: ClaimedDelivery, outcome: http.Outcome) -> None:
        now = utcnow()
        async with self.runtime.unit_of_work() as session:
            # The endpoint's row first, then the delivery's: the order every
            # writer of both takes (the API disabling an endpoint does too).
            endpoint = await session.get(WebhookEndpoint, item.endpoint_id, with_for_update=True)
            delivery = await repository.owned(session, item.id, self.worker_id)
            if delivery is None:
                log.warning("webhooks.lease_lost")
                return
            session.add(
                WebhookAttempt(
                    tenant_id=item.tenant_id,
                    delivery_id=item.id,
                    number=item.attempt,
                    status_code=outcome.status_code,
                    duration_ms=outcome.duration_ms,
                    response_body=outcome.body,
                    error=outcome.error,
                    created_at=now,
                )
            )
            delivery.last_status_code = outcome.status_code
            delivery.last_error = outcome.error
            delivery.locked_by = None
            delivery.locked_until = None
            data = {
                "deliveryId": item.id,
                "endpointId": item.endpoint_id,
                "eventId": item.event_id,
                "event": item.event_type,
                "attempt": item.attempt,
                "statusCode": outcome.status_code,
            }
            if outcome.succeeded:
                delivery.status = "succeeded"
                delivery.finished_at = now
                if endpoint is not None:
                    endpoint.consecutive_failures = 0
                record_event(session, Event("webhook.delivery.succeeded", data, item.tenant_id))
                log.info("webhooks.delivered", status=outcome.status_code)
                return
            delay = None
            if not outcome.gone:
                delay = next_delay(
                    item.attempt,
                    self.settings.retry_schedule_seconds,
                    self.settings.retry_jitter,
                    outcome.retry_after_seconds,
                )
            if delay is not None:
                delivery.status = "pending"
                delivery.next_attempt_at = now + timedelta(seconds=delay)
                record_event(
                    session,
                    Event(
                        "webhook.delivery.retrying",
                        {**data, "error": outcome.error, "retryInSeconds": round(delay, 3)},
                        item.tenant_id,
                    ),
                )
                log.info("webhooks.retrying", status=outcome.status_code, delay=delay)
                return
            delivery.status = "failed"
            delivery.finished_at = now
            record_event(
                session,
                Event("webhook.delivery.failed", {**data, "error": outcome.error}, item.tenant_id),
            )
            log.warning("webhooks.failed", status=outcome.status_code)
            if endpoint is None or not endpoint.enabled:
                return
            endpoint.consecutive_failures += 1
            reason = None
            if outcome.gone:
                reason = "gone"
            elif endpoint.consecutive_failures >= self.settings.max_consecutive_failures:
                reason = "failing"
            if reason is not None:
                await disable(session, endpoint, reason)


async def disable(session: AsyncSession, endpoint: WebhookEndpoint, reason: str) -> None:
    """Turn ``endpoint`` off and end what it is still owed (shared with the service)."""
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    await session.flush()
    ended = await repository.fail_open_deliveries(
        session, endpoint.id, f"The endpoint was disabled ({reason})"
    )
    record_event(
        session,
        Event(
            "webhook.endpoint.disabled",
            {"endpointId": endpoint.id, "reason": reason, "deliveriesEnded": ended},
            endpoint.tenant_id,
        ),
    )
    log.warning("webhooks.endpoint_disabled", endpoint_id=endpoint.id, reason=reason)
