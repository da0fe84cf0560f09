"""The install of a deployed server, and the refund when it fails for good.

``subscriptions.provision`` sends ``install_server`` to the node and waits for
the agent's report: ``stopped`` means installed (the term becomes
``active``); ``install_failed`` or a node that does not take the command
fails the attempt, and the job is retried with backoff
(``billing.provision_attempts`` in all). When the last attempt failed, the
failure hook reverses the deploy's charge with a refund entry, removes the
server and records why on the term (``GET /api/subscriptions/{id}``).
"""

from __future__ import annotations

import asyncio
import time

import structlog

from hostplane.commerce.subscriptions import events, service
from hostplane.commerce.subscriptions.changes import system_principal
from hostplane.commerce.subscriptions.models import ServerSubscription
from hostplane.core.context import RequestContext
from hostplane.core.errors import HostplaneError
from hostplane.infra.nodes import service as nodes
from hostplane.infra.servers import commands
from hostplane.infra.servers import service as servers
from hostplane.infra.servers.models import Server
from hostplane.platform.jobs.context import JobContext
from hostplane.platform.jobs.registry import JobFailure, job_failure_hook, job_handler

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.5
# Above the longest install the servers settings allow by default, with room to spare.
PROVISION_TIMEOUT = 2 * 3600


class InstallFailed(HostplaneError):
    code = "INSTALL_FAILED"
    status = 409


async def _status(ctx: JobContext, server_id: str) -> str | None:
    async with ctx.runtime.unit_of_work(read_only=True) as session:
        server = await session.get(Server, server_id)
        return None if server is None else server.status


@job_handler(service.PROVISION_JOB, timeout_seconds=PROVISION_TIMEOUT)
async def provision(ctx: JobContext, *, subscription_id: str) -> None:
    async with ctx.unit_of_work() as session:
        subscription = await session.get(ServerSubscription, subscription_id)
        if subscription is None or subscription.status != "provisioning":
            return
        if subscription.server_id is None:
            raise InstallFailed("The server was deleted before it was set up")
        server = await servers.get_server(session, subscription.server_id)
        server_id, tenant_id, first = server.id, subscription.tenant_id, server.status
    if first != "installing":
        context = RequestContext(
            principal=system_principal(tenant_id),
            method="POST",
            route="/api/servers/{server_id}/install",
            path_params={"server_id": server_id},
            user_agent=f"hostplane deploy {subscription_id}",
        )
        await commands.install(ctx.runtime, context, server_id)
    deadline = time.monotonic() + min(
        ctx.runtime.settings.servers.install_timeout_seconds, PROVISION_TIMEOUT - 60
    )
    status = await _status(ctx, server_id)
    while status == "installing":
        if time.monotonic() > deadline:
            raise InstallFailed("The install did not finish in time")
        await asyncio.sleep(POLL_SECONDS)
        status = await _status(ctx, server_id)
    if status is None:
        raise InstallFailed("The server was deleted before it was set up")
    if status == "install_failed":
        async with ctx.runtime.unit_of_work(read_only=True) as session:
            reason = (await servers.get_server(session, server_id)).status_reason
        raise InstallFailed(f"The install failed: {reason or 'no reason given'}")
    async with ctx.unit_of_work() as session:
        subscription = await session.get(ServerSubscription, subscription_id, with_for_update=True)
        if subscription is not None and subscription.status == "provisioning":
            subscription.status = "active"
            await session.flush()
            events.publish(session, "subscription.active", subscription)
    log.info("subscriptions.provisioned", subscription_id=subscription_id, server_id=server_id)


@job_failure_hook(service.PROVISION_JOB)
async def provision_failed(ctx: JobContext, failure: JobFailure, *, subscription_id: str) -> None:
    """Refund the deploy and remove the server, once (the term leaves ``provisioning``)."""
    pending = None
    online = False
    async with ctx.unit_of_work() as session:
        subscription = await session.get(ServerSubscription, subscription_id, with_for_update=True)
        if subscription is None or subscription.status != "provisioning":
            return
        server_id = subscription.server_id
        await service.refund(
            session, subscription, reason=f"The server could not be set up: {failure.message}"
        )
        if server_id is not None:
            pending = await servers.delete_server(
                session, system_principal(subscription.tenant_id), server_id, force=True
            )
            online = nodes.is_online(await nodes.get_node(session, pending.node_id))
    log.warning(
        "subscriptions.provision_refunded", subscription_id=subscription_id, error=failure.message
    )
    if pending is not None and online:
        await commands.carry_out_delete(ctx.runtime, pending)
