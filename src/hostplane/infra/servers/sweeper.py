"""No server waits for ever: passing states end, with a reason.

``installing``, ``starting``, ``stopping`` and ``transferring`` last only while
something is under way. Two things end the ones nothing will end otherwise:

- the reconcile when an agent connects (:func:`settle_unreported`): a server
  the panel thinks is on its way somewhere but that the agent does not know
  (its install was lost with an agent restart, its start never happened);
- the sweeper, a recurring job (:func:`sweep`): any such state older than its
  timeout (``servers.*_timeout_seconds``) ends, ``installing`` in
  ``install_failed`` (from which install is retried), the others in
  ``stopped``. The agent's next report (or reconcile) corrects a server that
  runs after all. Deletes still owed by connected nodes are retried too.

Every ending sets ``status_reason`` and publishes ``server.state_changed``.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import Final

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.config import ServerSettings
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.models import Node, PendingServerDelete
from hostplane.infra.servers import commands, reports, service
from hostplane.infra.servers.models import Server
from hostplane.platform.jobs.context import JobContext
from hostplane.platform.jobs.registry import job_handler

log = structlog.get_logger(__name__)

# Where each passing state ends when nothing else ended it.
ENDS: Final[dict[str, str]] = {
    "installing": "install_failed",
    "starting": "stopped",
    "stopping": "stopped",
    "transferring": "stopped",
}
# What the agent's reconcile can settle (a transfer is its job's to end).
_RECONCILED: Final = ("installing", "starting", "stopping")
SWEEP_SECONDS: Final = 30


def timeouts(settings: ServerSettings) -> dict[str, timedelta]:
    return {
        "installing": timedelta(seconds=settings.install_timeout_seconds),
        "starting": timedelta(seconds=settings.start_timeout_seconds),
        "stopping": timedelta(seconds=settings.stop_timeout_seconds),
        "transferring": timedelta(seconds=settings.transfer_timeout_seconds),
    }


def _end(session: AsyncSession, server: Server, reason: str) -> None:
    ending = ENDS[server.status]
    log.info(
        "servers.state_ended",
        server_id=server.id,
        previous=server.status,
        state=ending,
        reason=reason,
    )
    service.set_status(session, server, ending, reason=reason)


async def settle_unreported(session: AsyncSession, node_id: str, reported: Collection[str]) -> int:
    """End the passing states of the node's servers that its agent did not report."""
    rows = await session.scalars(
        select(Server).where(Server.node_id == node_id, Server.status.in_(_RECONCILED))
    )
    ended = 0
    for server in rows:
        if server.id in reported:
            continue
        if server.status == "installing":
            _end(session, server, reports.INSTALL_INTERRUPTED)
        else:
            _end(session, server, f"the node does not run it (it was {server.status})")
        ended += 1
    await session.flush()
    return ended


async def sweep(session: AsyncSession, settings: ServerSettings) -> int:
    """End every passing state older than its timeout; returns how many ended."""
    now = utcnow()
    ended = 0
    for status, limit in timeouts(settings).items():
        rows = await session.scalars(
            select(Server)
            .where(Server.status == status, Server.status_changed_at < now - limit)
            .with_for_update(skip_locked=True)
        )
        for server in rows:
            minutes = round(limit.total_seconds() / 60, 1)
            _end(session, server, f"{status} took longer than {minutes:g} min; ended by the panel")
            ended += 1
    await session.flush()
    return ended


async def nodes_owing_deletes(session: AsyncSession) -> list[str]:
    """Connected nodes that still have to remove deleted servers."""
    rows = await session.scalars(
        select(Node).where(
            Node.id.in_(select(PendingServerDelete.node_id).distinct()),
            Node.agent_session_id.is_not(None),
        )
    )
    return [node.id for node in rows if nodes.is_online(node)]


@job_handler("servers.sweep", every_seconds=SWEEP_SECONDS, timeout_seconds=300)
async def sweep_job(ctx: JobContext) -> None:
    async with ctx.unit_of_work() as session:
        ended = await sweep(session, ctx.runtime.settings.servers)
        owing = await nodes_owing_deletes(session)
    removed = 0
    for node_id in owing:
        removed += await commands.send_pending_deletes(ctx.runtime, node_id)
    if ended or removed:
        log.info("servers.swept", ended=ended, removed=removed)
