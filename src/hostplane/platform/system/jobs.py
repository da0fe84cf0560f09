"""Retention of the system event log and of webhook deliveries."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select

from hostplane.core.clock import utcnow
from hostplane.platform.jobs.context import JobContext
from hostplane.platform.jobs.registry import job_handler
from hostplane.platform.system.models import SystemEvent
from hostplane.platform.webhooks.models import (
    OPEN_STATUSES,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
)


@job_handler("system.prune_events", every_seconds=3600, timeout_seconds=600)
async def prune_events(ctx: JobContext) -> None:
    """Delete system events, finished deliveries and their events past ``webhooks.retention_days``."""
    cutoff = utcnow() - timedelta(days=ctx.runtime.settings.webhooks.retention_days)
    async with ctx.unit_of_work() as session:
        await session.execute(delete(SystemEvent).where(SystemEvent.created_at < cutoff))
        old = select(WebhookDelivery.id).where(
            WebhookDelivery.created_at < cutoff, WebhookDelivery.status.not_in(OPEN_STATUSES)
        )
        await session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(old)))
        await session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(old)))
        still_owed = select(WebhookDelivery.event_id)
        await session.execute(
            delete(WebhookEvent).where(
                WebhookEvent.created_at < cutoff, WebhookEvent.id.not_in(still_owed)
            )
        )
