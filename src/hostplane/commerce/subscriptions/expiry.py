"""Terms that end: the server is suspended, then deleted after the grace.

A recurring sweep in the worker finds terms whose end passed
(``billing.suspend_after_hours``) and terms whose grace ran out
(``billing.expiry_grace_hours`` after the end), and queues one job per
transition. The job's unique key holds the term's end, so each transition of
each term is queued once however many workers sweep, and a term renewed and
ended again gets a transition of its own. The jobs check the term again
under its row lock (a renewal may have come in between) and do nothing twice.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.subscriptions import events
from hostplane.commerce.subscriptions.changes import EXPIRY_REASON, system_principal
from hostplane.commerce.subscriptions.models import ServerSubscription
from hostplane.core.clock import utcnow
from hostplane.core.config import BillingSettings
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.rpc import AgentFailed, NodeUnavailable
from hostplane.infra.servers import commands
from hostplane.infra.servers import service as servers
from hostplane.platform.jobs import service as jobs
from hostplane.platform.jobs.context import JobContext
from hostplane.platform.jobs.registry import job_handler

log = structlog.get_logger(__name__)

SWEEP_JOB = "subscriptions.sweep_expiry"
SUSPEND_JOB = "subscriptions.suspend_expired"
DELETE_JOB = "subscriptions.delete_expired"
SWEEP_SECONDS = 30


def _suspend_at(settings: BillingSettings) -> timedelta:
    return timedelta(hours=settings.suspend_after_hours)


def _delete_at(settings: BillingSettings) -> timedelta:
    return timedelta(hours=max(settings.expiry_grace_hours, settings.suspend_after_hours))


async def sweep(session: AsyncSession, settings: BillingSettings) -> int:
    """Queue the transitions that are due; returns how many were found."""
    now = utcnow()
    found = 0
    # (status now, past how long after the term's end, the job, its key's word)
    for status, after, job, step in (
        ("active", _suspend_at(settings), SUSPEND_JOB, "suspend"),
        ("suspended", _delete_at(settings), DELETE_JOB, "delete"),
    ):
        due = await session.scalars(
            select(ServerSubscription).where(
                ServerSubscription.status == status,
                ServerSubscription.expires_at <= now - after,
            )
        )
        for subscription in due.all():
            # One job per transition and term end, whatever the sweeps overlap.
            expired = f"{subscription.expires_at.timestamp():.0f}"
            await jobs.enqueue(
                session,
                job,
                tenant_id=subscription.tenant_id,
                unique_key=f"expiry:{step}:{subscription.id}:{expired}",
                subscription_id=subscription.id,
            )
            found += 1
    return found


@job_handler(SWEEP_JOB, every_seconds=SWEEP_SECONDS, timeout_seconds=300)
async def sweep_job(ctx: JobContext) -> None:
    async with ctx.unit_of_work() as session:
        found = await sweep(session, ctx.runtime.settings.billing)
    if found:
        log.info("subscriptions.expiry_swept", due=found)


def _end(subscription: ServerSubscription) -> None:
    subscription.status = "ended"
    subscription.ended_at = utcnow()


@job_handler(SUSPEND_JOB, timeout_seconds=600)
async def suspend_expired(ctx: JobContext, *, subscription_id: str) -> None:
    """Suspend the server of a term that ended (and was not renewed since)."""
    delivery = None
    async with ctx.unit_of_work() as session:
        subscription = await session.get(ServerSubscription, subscription_id, with_for_update=True)
        due = utcnow() - _suspend_at(ctx.runtime.settings.billing)
        if subscription is None or subscription.status != "active":
            return
        if subscription.expires_at > due:
            return
        if subscription.server_id is None:
            # Deleted by its owner meanwhile: nothing to suspend, the term just ends.
            _end(subscription)
            await session.flush()
            events.publish(session, "subscription.ended", subscription)
            return
        server = await servers.get_server(session, subscription.server_id)
        if server.status != "suspended":
            _server, planned = await servers.suspend_server(
                session,
                system_principal(subscription.tenant_id),
                server.id,
                reason=EXPIRY_REASON,
            )
            if planned is not None:
                delivery = await commands.Delivery.of(session, planned)
        subscription.status = "suspended"
        subscription.suspended_at = utcnow()
        await session.flush()
        events.publish(session, "subscription.expired", subscription)
    if delivery is not None:
        try:
            await commands.deliver(ctx.runtime, delivery)
        except (AgentFailed, NodeUnavailable) as exc:
            # The agent stops a suspended server when it reconnects.
            log.warning("subscriptions.expiry_stop_failed", error=exc.message)


@job_handler(DELETE_JOB, timeout_seconds=600)
async def delete_expired(ctx: JobContext, *, subscription_id: str) -> None:
    """Delete the server of a term whose grace ran out without a renewal."""
    pending = None
    online = False
    async with ctx.unit_of_work() as session:
        subscription = await session.get(ServerSubscription, subscription_id, with_for_update=True)
        due = utcnow() - _delete_at(ctx.runtime.settings.billing)
        if subscription is None or subscription.status != "suspended":
            return
        if subscription.expires_at > due:
            return
        server_id = subscription.server_id
        _end(subscription)
        await session.flush()
        events.publish(session, "subscription.ended", subscription)
        if server_id is not None:
            pending = await servers.delete_server(
                session, system_principal(subscription.tenant_id), server_id, force=True
            )
            online = nodes.is_online(await nodes.get_node(session, pending.node_id))
    if pending is not None and online:
        await commands.carry_out_delete(ctx.runtime, pending)
