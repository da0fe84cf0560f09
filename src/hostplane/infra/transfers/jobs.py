"""The copy itself: source agent -> target agent (directly or relayed), then the flip.

When the target runs a peer listener, the panel issues a one-time token,
hands it to both agents over their own connections (``transfer_prepare``,
``transfer_push``), and the source streams the archive straight to the
target. When the target has no listener, or the source cannot reach it (NAT,
a firewall), the panel relays the archive between them instead, with flow
control end to end: the source only sends what the target has room for.
Either way the source announces the archive's sha256, the target checks it
before extracting into a staging folder, and the panel compares what both
report.

The job runs once (``max_attempts=1``) and never ends ``succeeded`` unless
the server moved. Any failure of the copy or the commit rolls the transfer
back (the server stays on its source, ``stopped``, its allocations
untouched) and fails the job with the error. A worker that dies mid-transfer
leaves the job's lease to expire; the worker that finds it runs the job's
failure hook, which rolls the transfer back the same way. A job handed back
unfinished (a worker shutting down) runs again, sees a transfer already under
way and rolls it back rather than guessing how far it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog

from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import HostplaneError
from hostplane.core.events.bus import Event
from hostplane.infra.nodes.rpc import AgentFailed, AgentRpc, Download
from hostplane.infra.servers.progress import job_follows
from hostplane.infra.servers.progress import topic as progress_topic
from hostplane.infra.transfers import service
from hostplane.platform.jobs.context import JobContext, PermanentJobFailure
from hostplane.platform.jobs.registry import JobFailure, job_failure_hook, job_handler
from hostplane.protocol import (
    TransferAbort,
    TransferCleanup,
    TransferCommit,
    TransferExport,
    TransferImport,
    TransferPrepare,
    TransferPush,
)

log = structlog.get_logger(__name__)

# The target answers after extracting the whole archive.
IMPORT_TIMEOUT = 3 * 3600.0
ABORT_TIMEOUT = 15.0
PROGRESS_SECONDS = 0.5


class TransferFailed(HostplaneError):
    code = "TRANSFER_FAILED"
    status = 502


async def _publish_progress(
    ctx: JobContext, server_id: str, done: int, *, stage: str, total: int = 0
) -> None:
    event = Event(
        "server.progress",
        {
            "serverId": server_id,
            "operation": "transfer",
            "stage": stage,
            "done": done,
            "total": total,
            "unit": "bytes",
        },
        tenant_id=ctx.tenant_id,
    )
    try:
        await ctx.runtime.bus.publish(event, topic=progress_topic(server_id))
    except ConnectionError:
        log.warning("transfers.progress_not_published", server_id=server_id)


async def _counted(ctx: JobContext, server_id: str, download: Download) -> AsyncIterator[bytes]:
    last = 0.0
    async for chunk in download.chunks():
        yield chunk
        now = time.monotonic()
        if now - last >= PROGRESS_SECONDS:
            last = now
            await _publish_progress(ctx, server_id, download.size, stage="copying")


class _DirectUnavailable(Exception):
    """The source could not open a connection to the target: relay instead."""


async def _copy(
    ctx: JobContext,
    calls: AgentRpc,
    source: str,
    target: str,
    server_id: str,
    disk_limit_mb: int | None = None,
) -> tuple[Any, str]:
    """Copy the archive; returns the target's answer and the route it took."""
    token = secrets.token_urlsafe(32)
    prepared = await calls.call(target, TransferPrepare(server_id=server_id, token=token))
    url = prepared.get("url") if isinstance(prepared, dict) else None
    if isinstance(url, str) and url:
        try:
            copied = await _copy_direct(calls, source, target, server_id, url, token, disk_limit_mb)
            return copied, "direct"
        except _DirectUnavailable as exc:
            log.info("transfers.relaying", server_id=server_id, reason=str(exc))
    return await _copy_relayed(ctx, calls, source, target, server_id, disk_limit_mb), "relayed"


async def _copy_direct(
    calls: AgentRpc,
    source: str,
    target: str,
    server_id: str,
    url: str,
    token: str,
    disk_limit_mb: int | None,
) -> Any:
    receiving = asyncio.create_task(
        calls.call(
            target,
            TransferImport(
                server_id=server_id, stream_id="", direct=True, disk_limit_mb=disk_limit_mb
            ),
            within=IMPORT_TIMEOUT,
        )
    )
    try:
        pushed = await calls.call(
            source,
            TransferPush(server_id=server_id, url=url, token=token),
            within=IMPORT_TIMEOUT,
        )
    except AgentFailed as exc:
        if exc.agent_code != "TARGET_UNREACHABLE":
            await _stop_waiting(receiving)
            raise
        # Nothing was sent: end the target's wait and let its import answer
        # (after it has cleaned up), then relay.
        with contextlib.suppress(HostplaneError):
            await calls.call(target, TransferAbort(server_id=server_id), within=ABORT_TIMEOUT)
        with contextlib.suppress(HostplaneError, TimeoutError):
            await asyncio.wait_for(receiving, ABORT_TIMEOUT)
        raise _DirectUnavailable(exc.message) from exc
    except BaseException:
        await _stop_waiting(receiving)
        raise
    imported = await receiving
    sent = pushed.get("sha256") if isinstance(pushed, dict) else None
    if not isinstance(imported, dict) or sent is None or imported.get("sha256") != sent:
        raise TransferFailed("The copy on the target does not match the source")
    return imported


async def _stop_waiting(answer: asyncio.Task[Any]) -> None:
    """Stop waiting for the target's import: it ends with the connection (or
    its wait for one is aborted by the rollback)."""
    answer.cancel()
    with contextlib.suppress(BaseException):
        await answer


async def _copy_relayed(
    ctx: JobContext,
    calls: AgentRpc,
    source: str,
    target: str,
    server_id: str,
    disk_limit_mb: int | None,
) -> Any:
    async with calls.download(source, TransferExport(server_id=server_id, stream_id="")) as export:

        def announced() -> str | None:
            return export.end.sha256 if export.end is not None else None

        imported = await calls.upload(
            target,
            TransferImport(server_id=server_id, stream_id="", disk_limit_mb=disk_limit_mb),
            _counted(ctx, server_id, export),
            sha256=announced,
            within=IMPORT_TIMEOUT,
        )
    sent = announced()
    if not isinstance(imported, dict) or sent is None or imported.get("sha256") != sent:
        raise TransferFailed("The copy on the target does not match the source")
    return imported


@job_handler("transfers.run", timeout_seconds=IMPORT_TIMEOUT + 600)
async def run_transfer(ctx: JobContext, *, transfer_id: str) -> None:
    async with ctx.unit_of_work() as session:
        scope_to_tenant(session, ctx.tenant_id)
        transfer = await service.load(session, transfer_id)
        if transfer is None:
            return
        status = transfer.status
        server_id = transfer.server_id
        source, target = transfer.source_node_id, transfer.target_node_id
        # The server's allocation travels with it: the target refuses more.
        disk_limit_mb = await service.disk_limit_of(session, server_id)
        if status == "pending":
            transfer.status = "copying"
    calls = AgentRpc(ctx.runtime.bus, tenant_id=ctx.tenant_id)
    if status != "pending":
        if status in service.ACTIVE:
            reason = "the transfer was interrupted"
            await _roll_back(ctx, calls, transfer_id, (source, target), server_id, reason)
            raise PermanentJobFailure(f"The transfer failed: {reason}", code="TRANSFER_FAILED")
        if status != "completed":
            raise PermanentJobFailure(f"The transfer {status}", code="TRANSFER_FAILED")
        return
    await _publish_progress(ctx, server_id, 0, stage="copying")
    try:
        async with job_follows(ctx, server_id, "transfer"):
            imported, route = await _copy(ctx, calls, source, target, server_id, disk_limit_mb)
        async with ctx.unit_of_work() as session:
            scope_to_tenant(session, ctx.tenant_id)
            await service.set_stage(
                session,
                transfer_id,
                "committing",
                archive_bytes=int(imported.get("size") or 0),
                checksum=f"sha256:{imported.get('sha256')}",
                route=route,
            )
        await calls.call(target, TransferCommit(server_id=server_id))
        async with ctx.unit_of_work() as session:
            scope_to_tenant(session, ctx.tenant_id)
            await service.complete(session, transfer_id)
    except Exception as exc:
        # Whatever went wrong, the server goes back to its source before the
        # job says so (a cancelled job is handed back and rolls back on rerun).
        if isinstance(exc, HostplaneError):
            reason, code = exc.message, exc.code
        else:
            log.exception("transfers.unexpected_failure", transfer_id=transfer_id)
            reason, code = "the transfer failed unexpectedly", "TRANSFER_FAILED"
        await _roll_back(ctx, calls, transfer_id, (source, target), server_id, reason)
        raise PermanentJobFailure(reason, code=code) from exc
    await _publish_progress(ctx, server_id, int(imported.get("size") or 0), stage="completed")
    log.info("transfers.completed", transfer_id=transfer_id, server_id=server_id)


@job_failure_hook("transfers.run")
async def transfer_job_failed(ctx: JobContext, failure: JobFailure, *, transfer_id: str) -> None:
    """The job failed for good without rolling back (its worker died, it timed
    out): put the server back on its source now. Idempotent: a transfer that
    already ended is left alone."""
    async with ctx.unit_of_work() as session:
        scope_to_tenant(session, ctx.tenant_id)
        transfer = await service.load(session, transfer_id)
        if transfer is None or transfer.status not in service.ACTIVE:
            return
        server_id = transfer.server_id
        source, target = transfer.source_node_id, transfer.target_node_id
    calls = AgentRpc(ctx.runtime.bus, tenant_id=ctx.tenant_id)
    reason = (
        "the worker running the transfer stopped"
        if failure.code == "LEASE_EXPIRED"
        else failure.message
    )
    await _roll_back(ctx, calls, transfer_id, (source, target), server_id, reason)


async def _roll_back(
    ctx: JobContext,
    calls: AgentRpc,
    transfer_id: str,
    nodes: tuple[str, str],
    server_id: str,
    reason: str,
) -> None:
    """Leave the server on its source: stop the source's export if one is still
    running (its reader may have died with a worker), discard the target's copy
    (when the target can still be reached) and mark the transfer failed."""
    source, target = nodes
    try:
        await calls.call(source, TransferAbort(server_id=server_id), within=ABORT_TIMEOUT)
    except HostplaneError as exc:
        # An export without a reader still ends on its own, after a stall.
        log.warning("transfers.source_abort_not_delivered", server_id=server_id, error=exc.message)
    try:
        await calls.call(
            target,
            TransferAbort(server_id=server_id, remove_files=True),
            within=ABORT_TIMEOUT,
        )
    except HostplaneError as exc:
        # A dead target keeps only a staging folder, which it never uses
        # and replaces on the next import of this server.
        log.warning("transfers.abort_not_delivered", server_id=server_id, error=exc.message)
    async with ctx.unit_of_work() as session:
        scope_to_tenant(session, ctx.tenant_id)
        await service.fail(session, transfer_id, reason)
    await _publish_progress(ctx, server_id, 0, stage="failed")
    log.warning("transfers.failed", transfer_id=transfer_id, server_id=server_id, error=reason)


@job_handler("transfers.cleanup_source", timeout_seconds=600)
async def cleanup_source(ctx: JobContext, *, node_id: str, server_id: str) -> None:
    """Delete the moved server's files from its old node (retried while it is away)."""
    calls = AgentRpc(ctx.runtime.bus, tenant_id=ctx.tenant_id)
    await calls.call(node_id, TransferCleanup(server_id=server_id), within=300)
