"""The delivery queue's queries: claiming the head of each endpoint's queue under a lease."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from hostplane.core.clock import utcnow
from hostplane.platform.webhooks.models import (
    OPEN_STATUSES,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """What a worker needs to send one delivery, copied out of its session."""

    id: str
    tenant_id: str
    endpoint_id: str
    url: str
    secret_sealed: str
    previous_secret_sealed: str | None
    previous_secret_expires_at: datetime | None
    event_id: str
    event_type: str
    event_data: dict[str, Any]
    event_created_at: datetime
    attempt: int


def _head_of_queue() -> Any:
    """The oldest open delivery of the same endpoint (correlated to the outer row)."""
    older = aliased(WebhookDelivery)
    return (
        select(func.min(older.id))
        .where(older.endpoint_id == WebhookDelivery.endpoint_id, older.status.in_(OPEN_STATUSES))
        .scalar_subquery()
    )


async def claim(
    session: AsyncSession, *, worker_id: str, limit: int, lease_seconds: float
) -> list[ClaimedDelivery]:
    """Take up to ``limit`` due deliveries, at most one per endpoint: each endpoint's oldest.

    Only the head of an endpoint's queue is ever claimable, so a later event
    waits while an earlier one is being sent or retried: deliveries keep the
    order of events. On PostgreSQL the candidate rows are locked with ``FOR
    UPDATE SKIP LOCKED``; on both databases the claim itself is a conditional
    UPDATE that only succeeds while the row is still free, so two workers
    never send the same delivery. A delivery whose lease expired (its worker
    died) is free again.
    """
    now = utcnow()
    candidates = (
        select(WebhookDelivery.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookEndpoint.enabled.is_(True),
            WebhookDelivery.id == _head_of_queue(),
            WebhookDelivery.next_attempt_at <= now,
            or_(
                WebhookDelivery.status == "pending",
                and_(WebhookDelivery.status == "sending", WebhookDelivery.locked_until < now),
            ),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    )
    ids = list((await session.scalars(candidates)).all())
    claimed: list[ClaimedDelivery] = []
    until = now + timedelta(seconds=lease_seconds)
    for delivery_id in ids:
        result = cast(
            CursorResult[Any],
            await session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    or_(
                        WebhookDelivery.status == "pending",
                        and_(
                            WebhookDelivery.status == "sending",
                            WebhookDelivery.locked_until < now,
                        ),
                    ),
                )
                .values(
                    status="sending",
                    attempts=WebhookDelivery.attempts + 1,
                    locked_by=worker_id,
                    locked_until=until,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            ),
        )
        if result.rowcount != 1:
            continue
        row = (
            await session.execute(
                select(WebhookDelivery, WebhookEndpoint, WebhookEvent)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .where(WebhookDelivery.id == delivery_id)
                .execution_options(populate_existing=True)
            )
        ).one()
        delivery, endpoint, event = row
        claimed.append(
            ClaimedDelivery(
                id=delivery.id,
                tenant_id=delivery.tenant_id,
                endpoint_id=endpoint.id,
                url=endpoint.url,
                secret_sealed=endpoint.secret_sealed,
                previous_secret_sealed=endpoint.previous_secret_sealed,
                previous_secret_expires_at=endpoint.previous_secret_expires_at,
                event_id=event.id,
                event_type=event.type,
                event_data=dict(event.data),
                event_created_at=event.created_at,
                attempt=delivery.attempts,
            )
        )
    return claimed


async def owned(session: AsyncSession, delivery_id: str, worker_id: str) -> WebhookDelivery | None:
    """The delivery, locked, if ``worker_id`` still holds its lease."""
    delivery = await session.get(
        WebhookDelivery, delivery_id, with_for_update=True, populate_existing=True
    )
    if delivery is None or delivery.status != "sending" or delivery.locked_by != worker_id:
        return None
    return delivery


async def fail_open_deliveries(session: AsyncSession, endpoint_id: str, reason: str) -> int:
    """End every delivery still owed to a disabled endpoint (they can be redelivered)."""
    now = utcnow()
    result = cast(
        CursorResult[Any],
        await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.endpoint_id == endpoint_id,
                WebhookDelivery.status.in_(OPEN_STATUSES),
            )
            .values(
                status="failed",
                last_error=reason,
                locked_by=None,
                locked_until=None,
                finished_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        ),
    )
    return int(result.rowcount or 0)
