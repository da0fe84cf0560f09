"""Backups: rules and transactions.

A backup row is created ``pending`` with a ``backups.create`` job in the same
transaction; the job asks the server's agent to archive the files
(``create_backup``) and records size and checksum when it answers (the
agent's ``backup_complete`` report lands on the same row, whichever comes
first). Restores and archive deletions are jobs too, so a node that is
offline for a moment does not lose them.

Limits: at most ``backups.limit_per_server`` backups per server (a new one
evicts the oldest unlocked completed backup, or is refused when every one is
locked) and ``backups.throttle_count`` new backups per server every
``backups.throttle_seconds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.config import BackupSettings
from hostplane.core.errors import Conflict, Locked, NotFound, RateLimited
from hostplane.core.principal import Principal
from hostplane.infra.backups.models import Backup
from hostplane.infra.servers import lifecycle
from hostplane.infra.servers.models import Server
from hostplane.infra.servers.service import load_for
from hostplane.platform.jobs import service as jobs
from hostplane.platform.webhooks.service import emit
from hostplane.protocol import BackupComplete

ACTIVE = ("pending", "in_progress")


class BackupNotFound(NotFound):
    def __init__(self, backup_id: str) -> None:
        super().__init__("backup", backup_id)


def archive_path(backup: Backup) -> str:
    """Where the agent keeps the archive, relative to its backup folder."""
    return f"{backup.server_id}/{backup.id}.tar.zst"


async def list_backups(
    session: AsyncSession, principal: Principal, server_id: str
) -> Sequence[Backup]:
    server = await load_for(session, principal, server_id, ("backup.read",))
    rows = await session.scalars(
        select(Backup).where(Backup.server_id == server.id).order_by(Backup.created_at.desc())
    )
    return rows.all()


async def _get(session: AsyncSession, server: Server, backup_id: str) -> Backup:
    backup = await session.get(Backup, backup_id)
    if backup is None or backup.server_id != server.id:
        raise BackupNotFound(backup_id)
    return backup


async def get_backup(
    session: AsyncSession, principal: Principal, server_id: str, backup_id: str
) -> Backup:
    server = await load_for(session, principal, server_id, ("backup.read",))
    return await _get(session, server, backup_id)


def _usable(server: Server) -> None:
    if server.status == "suspended":
        raise Locked("The server is suspended")
    if server.status == "transferring":
        raise Conflict("The server is being moved to another node")


async def _throttle(session: AsyncSession, server: Server, rules: BackupSettings) -> None:
    if rules.throttle_seconds <= 0:
        return
    since = utcnow() - timedelta(seconds=rules.throttle_seconds)
    recent = await session.scalars(
        select(Backup.created_at)
        .where(Backup.server_id == server.id, Backup.created_at >= since)
        .order_by(Backup.created_at)
    )
    times = recent.all()
    if len(times) >= rules.throttle_count:
        retry = int((times[0] - since).total_seconds()) + 1
        raise RateLimited(
            f"At most {rules.throttle_count} backups per {rules.throttle_seconds} seconds",
            details={"retryAfter": retry},
            headers={"Retry-After": str(retry)},
        )


async def _make_room(session: AsyncSession, server: Server, rules: BackupSettings) -> None:
    kept = (
        await session.scalars(
            select(Backup)
            .where(Backup.server_id == server.id, Backup.status != "failed")
            .order_by(Backup.created_at)
        )
    ).all()
    excess = len(kept) - rules.limit_per_server + 1
    if excess <= 0:
        return
    evictable = [b for b in kept if not b.locked and b.status == "completed"][:excess]
    if len(evictable) < excess:
        raise Conflict(
            f"This server already has {len(kept)} backups (the limit is "
            f"{rules.limit_per_server}) and none can be removed: unlock or delete one",
            details={"limit": rules.limit_per_server},
        )
    for backup in evictable:
        await _remove(session, backup)


async def _remove(session: AsyncSession, backup: Backup) -> None:
    await jobs.enqueue(
        session,
        "backups.delete_archive",
        tenant_id=backup.tenant_id,
        node_id=backup.node_id,
        server_id=backup.server_id,
        backup_id=backup.id,
    )
    await session.delete(backup)


async def create_backup(
    session: AsyncSession,
    principal: Principal,
    server_id: str,
    *,
    name: str | None,
    locked: bool,
    rules: BackupSettings,
) -> tuple[Backup, str]:
    """The new backup and the id of the job that makes it."""
    server = await load_for(session, principal, server_id, ("backup.create",), for_update=True)
    _usable(server)
    await _throttle(session, server, rules)
    await _make_room(session, server, rules)
    backup = Backup(
        tenant_id=server.tenant_id,
        server_id=server.id,
        node_id=server.node_id,
        name=name or f"backup-{utcnow():%Y%m%d-%H%M%S}",
        status="pending",
        locked=locked,
        created_by_user_id=principal.user_id,
    )
    session.add(backup)
    await session.flush()
    job = await jobs.enqueue(
        session, "backups.create", tenant_id=server.tenant_id, backup_id=backup.id
    )
    return backup, job.id


async def restore_backup(
    session: AsyncSession, principal: Principal, server_id: str, backup_id: str
) -> tuple[Backup, str]:
    """The backup and the id of the job that restores it."""
    server = await load_for(session, principal, server_id, ("backup.restore",), for_update=True)
    _usable(server)
    backup = await _get(session, server, backup_id)
    if backup.status != "completed":
        raise Conflict(f"Only a completed backup can be restored (this one is {backup.status})")
    if server.status not in lifecycle.OFF:
        raise Conflict(
            f"Stop the server before restoring a backup (it is {server.status})",
            details={"status": server.status},
        )
    if backup.node_id != server.node_id:
        raise Conflict("This backup is stored on another node than the server's")
    job = await jobs.enqueue(
        session, "backups.restore", tenant_id=server.tenant_id, backup_id=backup.id
    )
    return backup, job.id


async def delete_backup(
    session: AsyncSession, principal: Principal, server_id: str, backup_id: str
) -> None:
    server = await load_for(session, principal, server_id, ("backup.delete",))
    backup = await _get(session, server, backup_id)
    if backup.locked:
        raise Conflict("This backup is locked: unlock it before deleting it")
    if backup.status in ACTIVE:
        raise Conflict("This backup is still being made")
    await _remove(session, backup)


async def set_lock(
    session: AsyncSession, principal: Principal, server_id: str, backup_id: str, locked: bool
) -> Backup:
    server = await load_for(session, principal, server_id, ("backup.delete", "backup.create"))
    backup = await _get(session, server, backup_id)
    backup.locked = locked
    return backup


def mark_completed(
    session: AsyncSession, backup: Backup, *, size_bytes: int, checksum: str
) -> None:
    if backup.status == "completed":
        return
    backup.status = "completed"
    backup.size_bytes = size_bytes
    backup.checksum = checksum
    backup.error = None
    backup.completed_at = utcnow()
    emit(session, "backup.completed", webhook_data(backup), backup.tenant_id)


def mark_failed(session: AsyncSession, backup: Backup, error: str) -> None:
    if backup.status == "completed":
        return
    first = backup.status != "failed"
    backup.status = "failed"
    backup.error = error[:2000]
    backup.completed_at = utcnow()
    if first:
        emit(session, "backup.failed", webhook_data(backup), backup.tenant_id)


def webhook_data(backup: Backup) -> dict[str, Any]:
    """The ``data`` of a backup's webhook events."""
    return {
        "id": backup.id,
        "serverId": backup.server_id,
        "name": backup.name,
        "status": backup.status,
        "sizeBytes": backup.size_bytes,
        "error": backup.error,
    }


async def apply_report(session: AsyncSession, node_id: str, report: BackupComplete) -> None:
    """The agent's ``backup_complete``: complete (or fail) the matching row, once."""
    if report.backup_id is None:
        return
    backup = await session.get(Backup, report.backup_id, with_for_update=True)
    if backup is None or backup.server_id != report.server_id or backup.node_id != node_id:
        return
    if report.success:
        size = report.size_bytes if report.size_bytes is not None else int(report.size_mb * 2**20)
        mark_completed(session, backup, size_bytes=size, checksum=report.checksum)
    else:
        mark_failed(session, backup, report.error or "the node could not make the backup")


async def disk_limit_of(session: AsyncSession, server_id: str) -> int | None:
    """The server's disk allocation (MB), which a restore must fit in."""
    server = await session.get(Server, server_id)
    return None if server is None else server.allocated_disk_mb
