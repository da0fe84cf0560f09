"""Delivering alert actions: the ``alert_actions`` outbox, claimed under a lease and retried.

An action row is written in the transaction that opens or resolves its alert,
so it exists if and only if that change committed. Every worker process runs
:class:`AlertActionDispatcher`: it claims due actions (a conditional UPDATE,
after ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two workers never send the
same one), sends each, and records the outcome only while it still holds the
lease. A failure is retried after the next delay of
``alerts.action_retry_schedule_seconds``; when the schedule is spent the
action is ``failed``, with its last error on the alert. Nothing is dropped
silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import httpx
import structlog
from sqlalchemy import CursorResult, and_, or_, select, update

from hostplane.core.clock import utcnow
from hostplane.core.ids import new_id
from hostplane.core.runtime import Runtime
from hostplane.infra.alerts import notify
from hostplane.infra.alerts.models import Alert, AlertAction
from hostplane.infra.alerts.service import ACTIONS_QUEUED_TOPIC, alert_data

log = structlog.get_logger(__name__)

BATCH = 16


@dataclass(frozen=True, slots=True)
class ClaimedAction:
    id: str
    kind: str
    event: str
    config: dict[str, Any]
    attempt: int
    alert: dict[str, Any]


class AlertActionDispatcher:
    def __init__(self, runtime: Runtime, *, worker_id: str | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.alerts
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:alerts:{new_id()[-6:]}"
        self._wakeup = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Send due actions until ``stop`` is set."""
        async with (
            httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=60.0) as client,
            self.runtime.bus.subscribe(ACTIONS_QUEUED_TOPIC, max_queue=16) as queued,
        ):
            forward = asyncio.create_task(self._forward(queued))
            waker = asyncio.create_task(self._wake_on(stop))
            failures = 0
            try:
                while not stop.is_set():
                    self._wakeup.clear()
                    try:
                        await self.send_due(client)
                        failures = 0
                    except Exception:
                        failures += 1
                        log.exception("alerts.actions_failed", attempt=failures)
                    delay = min(self.settings.evaluate_seconds, 1.0) * (2 ** min(failures, 6))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), delay)
            finally:
                for task in (forward, waker):
                    task.cancel()
                await asyncio.gather(forward, waker, return_exceptions=True)

    async def _forward(self, queued: object) -> None:
        async for _event in queued:  # type: ignore[attr-defined]
            self._wakeup.set()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wakeup.set()

    async def send_due(self, client: httpx.AsyncClient | None = None) -> int:
        """Claim and send what is due now, until nothing is; return how many were sent."""
        sent = 0
        async with contextlib.AsyncExitStack() as stack:
            if client is None:
                client = await stack.enter_async_context(
                    httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=60.0)
                )
            while True:
                claimed = await self._claim()
                if not claimed:
                    return sent
                await asyncio.gather(*(self._deliver(client, item) for item in claimed))
                sent += len(claimed)

    async def _claim(self) -> list[ClaimedAction]:
        now = utcnow()
        free = or_(
            AlertAction.status == "pending",
            and_(AlertAction.status == "sending", AlertAction.locked_until < now),
        )
        async with self.runtime.unit_of_work() as session:
            ids = (
                await session.scalars(
                    select(AlertAction.id)
                    .where(AlertAction.next_attempt_at <= now, free)
                    .order_by(AlertAction.next_attempt_at, AlertAction.id)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            claimed: list[ClaimedAction] = []
            until = now + timedelta(seconds=self.settings.action_lease_seconds)
            for action_id in ids:
                result = cast(
                    CursorResult[Any],
                    await session.execute(
                        update(AlertAction)
                        .where(AlertAction.id == action_id, free)
                        .values(
                            status="sending",
                            attempts=AlertAction.attempts + 1,
                            locked_by=self.worker_id,
                            locked_until=until,
                            updated_at=now,
                        )
                        .execution_options(synchronize_session=False)
                    ),
                )
                if result.rowcount != 1:
                    continue
                action, alert = (
                    await session.execute(
                        select(AlertAction, Alert)
                        .join(Alert, Alert.id == AlertAction.alert_id)
                        .where(AlertAction.id == action_id)
                        .execution_options(populate_existing=True)
                    )
                ).one()
                claimed.append(
                    ClaimedAction(
                        id=action.id,
                        kind=action.kind,
                        event=action.event,
                        config=dict(action.config or {}),
                        attempt=action.attempts,
                        alert=alert_data(alert),
                    )
                )
            return claimed

    async def _send(self, client: httpx.AsyncClient, item: ClaimedAction) -> str | None:
        settings = self.runtime.settings
        if item.kind == "webhook":
            return await notify.send_webhook(
                client, str(item.config.get("url", "")), item.event, item.alert, settings
            )
        if item.kind == "email":
            to = [str(a) for a in item.config.get("to") or []]
            return await notify.send_email(to, item.event, item.alert, settings)
        return f"Unknown action type {item.kind!r}"

    async def _deliver(self, client: httpx.AsyncClient, item: ClaimedAction) -> None:
        try:
            error = await self._send(client, item)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("alerts.action_send_failed", action_id=item.id)
            error = "The action failed unexpectedly; the worker's log has the details"
        try:
            await self._record(item, error)
        except Exception:
            # The lease runs out and another attempt follows; nothing is lost.
            log.exception("alerts.action_record_failed", action_id=item.id)

    async def _record(self, item: ClaimedAction, error: str | None) -> None:
        now = utcnow()
        schedule = self.settings.action_retry_schedule_seconds
        values: dict[str, Any] = {"locked_by": None, "locked_until": None, "last_error": error}
        if error is None:
            values |= {"status": "succeeded", "finished_at": now}
        elif item.attempt <= len(schedule):
            delay = schedule[item.attempt - 1]
            values |= {"status": "pending", "next_attempt_at": now + timedelta(seconds=delay)}
        else:
            values |= {"status": "failed", "finished_at": now}
        async with self.runtime.unit_of_work() as session:
            result = cast(
                CursorResult[Any],
                await session.execute(
                    update(AlertAction)
                    .where(
                        AlertAction.id == item.id,
                        AlertAction.status == "sending",
                        AlertAction.locked_by == self.worker_id,
                    )
                    .values(updated_at=now, **values)
                    .execution_options(synchronize_session=False)
                ),
            )
        if result.rowcount != 1:
            log.warning("alerts.action_lease_lost", action_id=item.id)
        elif error is None:
            log.info("alerts.action_sent", action_id=item.id, kind=item.kind, event=item.event)
        else:
            log.warning(
                "alerts.action_failed", action_id=item.id, status=values["status"], error=error
            )
