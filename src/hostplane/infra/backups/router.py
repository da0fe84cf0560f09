"""``/api/servers/{server_id}/backups``: Catalyst's and QeinTech's backup routes
(the same paths in both), plus lock/unlock and a detail route."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from hostplane.core.errors import Unauthorized
from hostplane.core.http.deps import Authenticated, PrincipalDep, RuntimeDep, SessionDep
from hostplane.core.http.envelope import Envelope, ok
from hostplane.infra.backups import downloads, service
from hostplane.infra.backups import jobs as _jobs  # noqa: F401 - registers the job handlers
from hostplane.infra.backups.models import Backup
from hostplane.infra.backups.schemas import (
    BackupCreate,
    BackupLink,
    BackupLock,
    BackupMessage,
    BackupOut,
    BackupStarted,
)
from hostplane.infra.files import links

router = APIRouter(prefix="/api/servers/{server_id}/backups", tags=["backups"])


def _out(backup: Backup) -> BackupOut:
    size = backup.size_bytes
    return BackupOut(
        id=backup.id,
        server_id=backup.server_id,
        node_id=backup.node_id,
        name=backup.name,
        path=service.archive_path(backup),
        size_mb=round(size / 2**20, 3) if size is not None else None,
        size_bytes=size,
        checksum=backup.checksum,
        status=backup.status,
        locked=backup.locked,
        error=backup.error,
        created_at=backup.created_at,
        completed_at=backup.completed_at,
    )


@router.get("", response_model=Envelope[list[BackupOut]])
async def list_backups(
    server_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[list[BackupOut]]:
    """The server's backups, newest first, with status, size and sha256 checksum."""
    found = await service.list_backups(session, principal, server_id)
    return ok([_out(b) for b in found])


@router.post("", response_model=Envelope[BackupStarted])
async def create_backup(
    server_id: str,
    session: SessionDep,
    principal: Authenticated,
    runtime: RuntimeDep,
    body: BackupCreate | None = None,
) -> Envelope[BackupStarted]:
    """Start a backup (``pending``; follow it in the list or on the socket). 429 beyond
    the throttle, 409 when the limit is reached and every backup is locked."""
    values = body or BackupCreate()
    backup, job_id = await service.create_backup(
        session,
        principal,
        server_id,
        name=values.name,
        locked=values.locked,
        rules=runtime.settings.backups,
    )
    return ok(
        BackupStarted(
            message="Backup creation started",
            backup_id=backup.id,
            backup_name=backup.name,
            status="pending",
            job_id=job_id,
        )
    )


@router.get("/{backup_id}", response_model=Envelope[BackupOut])
async def get_backup(
    server_id: str, backup_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[BackupOut]:
    return ok(_out(await service.get_backup(session, principal, server_id, backup_id)))


@router.post("/{backup_id}/restore", response_model=Envelope[BackupMessage])
async def restore_backup(
    server_id: str, backup_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[BackupMessage]:
    """Restore over the server's files (409 unless the server is stopped). The files
    become exactly the backup's: files created since are removed."""
    backup, job_id = await service.restore_backup(session, principal, server_id, backup_id)
    return ok(
        BackupMessage(message="Backup restoration started", backup_id=backup.id, job_id=job_id)
    )


@router.post("/{backup_id}/lock", response_model=Envelope[BackupOut])
async def lock_backup(
    server_id: str,
    backup_id: str,
    session: SessionDep,
    principal: Authenticated,
    body: BackupLock | None = None,
) -> Envelope[BackupOut]:
    """Lock (default) or unlock: a locked backup is never evicted or deleted."""
    locked = (body or BackupLock()).locked
    return ok(_out(await service.set_lock(session, principal, server_id, backup_id, locked)))


@router.delete("/{backup_id}", response_model=Envelope[BackupMessage])
async def delete_backup(
    server_id: str, backup_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[BackupMessage]:
    """Delete a backup (409 while locked or still being made); the archive is removed
    from its node by a job."""
    await service.delete_backup(session, principal, server_id, backup_id)
    return ok(BackupMessage(message="Backup deleted successfully", backup_id=backup_id))


@router.get(
    "/{backup_id}/download",
    response_model=Envelope[BackupLink],
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_backup(
    server_id: str,
    backup_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    token: Annotated[str | None, Query(max_length=4096)] = None,
) -> Any:
    """A one-time URL for the archive (``data {url, expiresAt}``; ``backup.download`` or
    ``backup.read``). The URL carries ``token``, works once for five minutes without
    ``Authorization``, and streams the ``.tar.zst`` archive from its node."""
    if token is None:
        if not principal.is_authenticated:
            raise Unauthorized("Authentication required")
        link, expires_at = await downloads.issue_link(runtime, principal, server_id, backup_id)
        public = runtime.settings.public_url
        base = public.rstrip("/") if public else str(request.base_url).rstrip("/")
        url = f"{base}{request.url.path}?{urlencode({'token': link})}"
        return ok(BackupLink(url=url, expires_at=expires_at))
    found, claims = await downloads.redeem(runtime, server_id, backup_id, token)
    stack = contextlib.AsyncExitStack()
    # Entered before the response starts: an archive missing on the node is an envelope.
    archive = await stack.enter_async_context(downloads.open_archive(runtime, found))
    try:
        # The first chunk is here: spend the link now (a failure before this
        # point leaves it usable; of two racing uses, one gets here first).
        await links.spend(runtime, claims)
    except BaseException:
        await stack.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        async with stack:
            async for chunk in archive.chunks():
                yield chunk

    filename = re.sub(r"[^A-Za-z0-9_.-]+", "_", found.name) or "backup"
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}.tar.zst"',
        "Cache-Control": "no-store",
    }
    if found.size_bytes is not None:
        headers["Content-Length"] = str(found.size_bytes)
    return StreamingResponse(body(), media_type="application/zstd", headers=headers)
