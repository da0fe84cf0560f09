"""The job that credits a verified payment event (queued by the webhook)."""

from __future__ import annotations

import structlog

from hostplane.commerce.payments import service
from hostplane.platform.jobs.context import JobContext
from hostplane.platform.jobs.registry import job_handler

log = structlog.get_logger(__name__)


@job_handler(service.APPLY_EVENT_JOB, timeout_seconds=120)
async def apply_payment_event(ctx: JobContext, *, payment_event_id: str) -> None:
    # Unscoped: the event names its tenant only through its top-up; the
    # credit and the invoice carry the top-up's tenant explicitly.
    async with ctx.unit_of_work() as session:
        outcome = await service.apply_event(
            session, payment_event_id, final=ctx.attempt >= ctx.max_attempts
        )
    log.info("payment event applied", payment_event_id=payment_event_id, outcome=outcome)
