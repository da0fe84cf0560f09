"""Running the delivery loop to completion in tests."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from hostplane.core.runtime import Runtime
from hostplane.platform.webhooks.dispatcher import WebhookDispatcher
from hostplane.platform.webhooks.models import OPEN_STATUSES, WebhookDelivery


async def open_deliveries(runtime: Runtime) -> int:
    async with runtime.unit_of_work() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.status.in_(OPEN_STATUSES))
        )
        return int(count or 0)


async def deliver_all(runtime: Runtime, *, timeout: float = 15.0) -> int:
    """Send and retry until nothing is owed (the test schedule retries within 0.05 s)."""
    dispatcher = WebhookDispatcher(runtime)
    attempts = 0
    async with asyncio.timeout(timeout):
        while True:
            attempts += await dispatcher.run_until_idle()
            if not await open_deliveries(runtime):
                return attempts
            await asyncio.sleep(0.05)
