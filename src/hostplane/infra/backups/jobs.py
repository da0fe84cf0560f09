"""The durable half of backups: the agent calls, retried while a node is away."""

from __future__ import annotations

import structlog

from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.infra.backups import service
from hostplane.infra.backups.models import Backup
from hostplane.infra.nodes.rpc import AgentFailed, AgentRpc, NodeUnavailable
from hostplane.infra.servers.progress import job_follows
from hostplane.platform.jobs.context import JobContext, PermanentJobFailure
from hostplane.platform.jobs.registry import job_handler
from hostplane.protocol import CreateBackup, DeleteBackup, RestoreBackup

log = structlog.get_logger(__name__)

# Restores and deletions are quick to request; the agent answers when done.
RESTORE_TIMEOUT = 6 * 3600.0
DELETE_TIMEOUT = 60.0


@job_handler("backups.create", timeout_seconds=6 * 3600 + 60)
async def create_backup_job(ctx: JobContext, *, backup_id: str) -> None:
    async with ctx.unit_of_work() as session:
        scope_to_tenant(session, ctx.tenant_id)
        backup = await session.get(Backup, backup_id)
        if backup is None or backup.status not in service.ACTIVE:
            return  # deleted meanwhile, or already settled by the agent's report
        backup.status = "in_progress"
        node_id, server_id, name = backup.node_id, backup.server_id, backup.name
    calls = AgentRpc(ctx.runtime.bus, tenant_id=ctx.tenant_id)
    try:
        async with job_follows(ctx, server_id, "backup"):
            answer = await calls.call(
                node_id,
                CreateBackup(server_id=server_id, backup_name=name, backup_id=backup_id),
                within=ctx.runtime.settings.backups.timeout_seconds,
            )
    except AgentFailed as exc:
        await _settle(ctx, backup_id, error=exc.message)
        return
    except NodeUnavailable as exc:
        if ctx.attempt < ctx.max_attempts:
            raise  # retried with backoff
        await _settle(ctx, backup_id, error=exc.message)
        return
    await _settle(
        ctx,
        backup_id,
        size_bytes=int(answer.get("sizeBytes") or 0),
        checksum=str(answer.get("checksum") or ""),
    )


async def _settle(
    ctx: JobContext,
    backup_id: str,
    *,
    error: str | None = None,
    size_bytes: int = 0,
    checksum: str = "",
) -> None:
    async with ctx.unit_of_work() as session:
        scope_to_tenant(session, ctx.tenant_id)
        backup = await session.get(Backup, backup_id, with_for_update=True)
        if backup is None:
            return
        if error is not None:
            service.mark_failed(session, backup, error)
        else:
            service.mark_completed(session, backup, size_bytes=size_bytes, checksum=checksum)


@job_handler("backups.restore", timeout_seconds=RESTORE_TIMEOUT + 60)
async def restore_backup_job(ctx: JobContext, *, backup_id: str) -> None:
    async with ctx.unit_of_work() as session:
        scope_to_tenant(session, ctx.tenant_id)
        backup = await session.get(Backup, backup_id)
        if backup is None:
            return
        node_id, server_id, checksum = backup.node_id, backup.server_id, backup.checksum
        disk_limit_mb = await service.disk_limit_of(session, server_id)
    calls = AgentRpc(ctx.runtime.bus, tenant_id=ctx.tenant_id)
    async with job_follows(ctx, server_id, "restore"):
        try:
            await calls.call(
                node_id,
                RestoreBackup(
                    server_id=server_id,
                    backup_id=backup_id,
                    checksum=checksum,
                    disk_limit_mb=disk_limit_mb,
                ),
                within=RESTORE_TIMEOUT,
            )
        except AgentFailed as exc:
            if exc.agent_code == "DISK_LIMIT_EXCEEDED":
                # Trying again cannot help until the allocation grows.
                raise PermanentJobFailure(exc.message, code=exc.code) from exc
            raise
    log.info("backups.restored", backup_id=backup_id, server_id=server_id)


@job_handler("backups.delete_archive", timeout_seconds=DELETE_TIMEOUT + 30)
async def delete_archive_job(
    ctx: JobContext, *, node_id: str, server_id: str, backup_id: str
) -> None:
    calls = AgentRpc(ctx.runtime.bus, tenant_id=ctx.tenant_id)
    await calls.call(
        node_id, DeleteBackup(server_id=server_id, backup_id=backup_id), within=DELETE_TIMEOUT
    )
