"""Console log history: what the agent streamed, kept for ``GET .../logs``.

Retention keeps at most :data:`MAX_LINES_PER_SERVER` lines per server and
nothing older than :data:`MAX_AGE`; :func:`prune_logs` enforces both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import cast

import structlog
from sqlalchemy import Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.principal import Principal
from hostplane.infra.servers.models import Server, ServerLog
from hostplane.infra.servers.service import load_for
from hostplane.platform.jobs.context import JobContext
from hostplane.platform.jobs.registry import job_handler

log = structlog.get_logger(__name__)

STREAMS = ("stdout", "stderr", "system")
MAX_LINES_PER_SERVER = 10_000
MAX_AGE = timedelta(days=7)
MAX_LINE_LENGTH = 16_384
# Rows per INSERT of console history: about 10 ms of the event loop each.
INSERT_CHUNK = 500


async def list_logs(
    session: AsyncSession,
    principal: Principal,
    server_id: str,
    *,
    limit: int = 100,
    stream: str | None = None,
    before: int | datetime | None = None,
) -> Sequence[ServerLog]:
    """The newest ``limit`` lines before ``before`` (a line's ``seq``, or a moment:
    Catalyst's timestamp), oldest first."""
    server = await load_for(session, principal, server_id, ("server.logs.read",))
    statement = select(ServerLog).where(ServerLog.server_id == server.id)
    if stream is not None:
        statement = statement.where(ServerLog.stream == stream)
    if isinstance(before, datetime):
        statement = statement.where(ServerLog.created_at < before)
    elif before is not None:
        statement = statement.where(ServerLog.seq < before)
    rows = (await session.scalars(statement.order_by(ServerLog.seq.desc()).limit(limit))).all()
    return list(reversed(rows))


async def append_console(
    session: AsyncSession, server_id: str, stream: str, lines: Iterable[str]
) -> int:
    """Store console output the agent sent; returns how many lines were kept.

    Only the newest :data:`MAX_LINES_PER_SERVER` lines of one call are
    written: retention would delete the rest anyway, and a server flooding its
    console must not turn into a flood of inserts. Multi-row INSERTs of
    :data:`INSERT_CHUNK` rows, with the event loop let go between them.
    """
    server = await session.get(Server, server_id)
    if server is None:
        return 0
    if stream not in STREAMS:
        stream = "stdout"
    kept = list(lines)[-MAX_LINES_PER_SERVER:]
    now = utcnow()
    # The table's INSERT, not the ORM's bulk insert: this runs on the event
    # loop that carries every console, and the ORM's per-row bookkeeping took
    # 100-300 ms for 10,000 lines, stalling all of them at once.
    statement = insert(cast(Table, ServerLog.__table__))
    for start in range(0, len(kept), INSERT_CHUNK):
        await session.execute(
            statement,
            [
                {
                    "tenant_id": server.tenant_id,
                    "server_id": server.id,
                    "stream": stream,
                    "data": line[:MAX_LINE_LENGTH],
                    "created_at": now,
                }
                for line in kept[start : start + INSERT_CHUNK]
            ],
        )
        # Lines arriving meanwhile go out to their viewers between chunks.
        await asyncio.sleep(0)
    return len(kept)


async def prune_logs(
    session: AsyncSession,
    *,
    max_lines_per_server: int = MAX_LINES_PER_SERVER,
    max_age: timedelta = MAX_AGE,
) -> int:
    """Delete lines older than ``max_age`` and beyond the newest ``max_lines_per_server``."""
    deleted = 0
    result = await session.execute(
        delete(ServerLog).where(ServerLog.created_at < utcnow() - max_age)
    )
    deleted += int(getattr(result, "rowcount", 0) or 0)
    server_ids = (await session.scalars(select(ServerLog.server_id).distinct())).all()
    for server_id in server_ids:
        cutoff = await session.scalar(
            select(ServerLog.seq)
            .where(ServerLog.server_id == server_id)
            .order_by(ServerLog.seq.desc())
            .offset(max_lines_per_server)
            .limit(1)
        )
        if cutoff is not None:
            result = await session.execute(
                delete(ServerLog).where(ServerLog.server_id == server_id, ServerLog.seq <= cutoff)
            )
            deleted += int(getattr(result, "rowcount", 0) or 0)
    return deleted


# Retention runs hourly from whichever worker gets there first.
@job_handler("servers.prune_logs", every_seconds=3600, timeout_seconds=600)
async def prune_logs_job(ctx: JobContext) -> None:
    async with ctx.unit_of_work() as session:
        removed = await prune_logs(session)
    log.info("servers.logs_pruned", removed=removed)
