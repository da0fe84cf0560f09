"""Backups on this node: create, restore, delete, and stream one out.

Archives live in ``<data dir>/backups/<server id>/<backup id>.tar.zst``; the
panel names backups by id and never chooses a path on the node (Catalyst's
``backupPath`` is accepted and ignored as a location).
"""

from __future__ import annotations

import re
from typing import Any

from hostplane.agent.backups import archive
from hostplane.agent.backups.store import BackupNotFound, BackupStore
from hostplane.agent.disk import limit_bytes
from hostplane.agent.handlers.context import HandlerContext
from hostplane.agent.runtime import ServerAlreadyRunning
from hostplane.agent.streams import CHUNK_SIZE
from hostplane.protocol import (
    BackupComplete,
    BackupRead,
    CreateBackup,
    DeleteBackup,
    RestoreBackup,
    WireModel,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def backup_id_of(backup_id: str | None, backup_name: str | None) -> str:
    """The archive's id: the panel's ``backupId``, else a safe form of the name."""
    if backup_id:
        return backup_id
    cleaned = _UNSAFE.sub("-", backup_name or "").strip("-.")[:128]
    return cleaned or "backup"


def checksum_hex(checksum: str | None) -> str | None:
    if not checksum:
        return None
    return checksum.removeprefix("sha256:").lower()


class BackupHandlers:
    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        self.store = BackupStore(ctx.data_dir / "backups")

    def handlers(self) -> dict[type[WireModel], Any]:
        return {
            CreateBackup: self.create,
            RestoreBackup: self.restore,
            DeleteBackup: self.delete,
            BackupRead: self.read,
        }

    async def create(self, message: CreateBackup) -> Any:
        server_id = message.server_id
        backup_id = backup_id_of(message.backup_id, message.backup_name)
        destination = self.store.path_for(server_id, backup_id)
        destination.parent.mkdir(parents=True, exist_ok=True)
        source = self.ctx.server_dir(server_id)
        source.mkdir(parents=True, exist_ok=True)
        progress = self.ctx.progress(server_id, "backup", message.request_id)
        try:
            info = await self.ctx.run(
                archive.create_archive,
                source,
                destination,
                level=self.ctx.settings.backup_compression_level,
                progress=progress,
            )
        except Exception as exc:
            await self.ctx.send(
                BackupComplete(
                    server_id=server_id,
                    backup_name=message.backup_name,
                    backup_path=f"{server_id}/{backup_id}.tar.zst",
                    size_mb=0,
                    checksum="",
                    backup_id=backup_id,
                    success=False,
                    error=str(exc),
                )
            )
            raise
        checksum = f"sha256:{info.sha256}"
        await self.ctx.send(
            BackupComplete(
                server_id=server_id,
                backup_name=message.backup_name,
                backup_path=f"{server_id}/{backup_id}.tar.zst",
                size_mb=round(info.size_bytes / 2**20, 3),
                checksum=checksum,
                backup_id=backup_id,
                size_bytes=info.size_bytes,
            )
        )
        return {
            "backupId": backup_id,
            "sizeBytes": info.size_bytes,
            "checksum": checksum,
            "files": info.files,
        }

    async def restore(self, message: RestoreBackup) -> Any:
        server_id = message.server_id
        if await self.ctx.is_running(server_id):
            raise ServerAlreadyRunning("stop the server before restoring a backup")
        backup_id = backup_id_of(message.backup_id, None)
        path = self.store.path_for(server_id, backup_id)
        if not path.is_file():
            raise BackupNotFound("this backup is not on the node")
        target = self.ctx.server_dir(server_id)
        target.mkdir(parents=True, exist_ok=True)
        with self.ctx.exclusive(server_id, "restoring a backup"):
            info = await self.ctx.run(
                archive.restore_archive,
                path,
                target,
                expected_sha256=checksum_hex(message.checksum),
                max_bytes=self.ctx.settings.archive_max_bytes,
                max_files=self.ctx.settings.archive_max_files,
                progress=self.ctx.progress(server_id, "restore", message.request_id),
                # The restored files replace the server's: their total is
                # held against the whole allocation, not what is left of it.
                disk_limit=limit_bytes(message.disk_limit_mb),
            )
            self.ctx.disk.invalidate(server_id)
        return {"files": info.files, "bytes": info.bytes}

    async def delete(self, message: DeleteBackup) -> Any:
        backup_id = backup_id_of(message.backup_id, None)
        removed = await self.ctx.run(self.store.delete, message.server_id, backup_id)
        return {"deleted": removed}

    async def read(self, message: BackupRead) -> Any:
        path = self.store.path_for(message.server_id, message.backup_id)
        try:
            handle = await self.ctx.run(path.open, "rb")
        except FileNotFoundError as exc:
            raise BackupNotFound("this backup is not on the node") from exc
        with handle:
            async with self.ctx.streams.outgoing(message.stream_id) as out:
                while chunk := await self.ctx.run(handle.read, CHUNK_SIZE):
                    await out.send(chunk)
        return {"size": out.size, "sha256": out.sha256}
