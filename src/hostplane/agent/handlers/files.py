"""The file manager's requests: list, read, write, and the operations on paths.

Paths are the user's (``/world/level.dat``); :class:`ServerRoot` confines
every one of them to the server's data folder. Bodies travel as streams with
flow control, so neither side ever holds a whole file in memory.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from hostplane.agent.disk import Quota
from hostplane.agent.files import archive_create, archives, operations
from hostplane.agent.files.confine import ServerRoot
from hostplane.agent.files.errors import FileError, TooLarge
from hostplane.agent.files.pull import pull as pull_from_url
from hostplane.agent.handlers.context import HandlerContext
from hostplane.agent.streams import CHUNK_SIZE
from hostplane.protocol import (
    FileChmod,
    FileCompress,
    FileCopy,
    FileDecompress,
    FileDelete,
    FileList,
    FileMkdir,
    FileOperation,
    FilePull,
    FileRead,
    FileRename,
    FileStat,
    FileWrite,
    WireModel,
)

logger = logging.getLogger(__name__)

# Catalyst's ``file_operation`` carries content inline in JSON: keep it small.
INLINE_MAX_BYTES = 5 * 2**20


class ChecksumMismatch(FileError):
    code = "CHECKSUM_MISMATCH"


class FileHandlers:
    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx

    def root(self, server_id: str) -> ServerRoot:
        folder = self.ctx.server_dir(server_id)
        folder.mkdir(parents=True, exist_ok=True)
        return ServerRoot(folder, owner=self.ctx.file_owner(server_id))

    async def adopt(self, root: ServerRoot, path: str) -> None:
        """Hand what was just written to the server's uid (see :meth:`ServerRoot.adopt`).

        The change itself is done; a failure here is logged, and the server's
        next start hands its whole folder over anyway."""
        if root.owner is None:
            return
        try:
            await self.ctx.run(root.adopt, path)
        except (OSError, FileError) as exc:
            logger.warning("could not give %s to the server's uid: %s", path, exc)

    async def quota(self, server_id: str, limit_mb: int | None) -> Quota | None:
        """The budget the server's allocation leaves (``None``: unlimited)."""
        quota: Quota | None = await self.ctx.run(self.ctx.disk.quota, server_id, limit_mb)
        return quota

    def handlers(self) -> dict[type[WireModel], Any]:
        return {
            FileList: self.list,
            FileStat: self.stat,
            FileRead: self.read,
            FileWrite: self.write,
            FileMkdir: self.mkdir,
            FileDelete: self.delete,
            FileRename: self.rename,
            FileCopy: self.copy,
            FileChmod: self.chmod,
            FileCompress: self.compress,
            FileDecompress: self.decompress,
            FilePull: self.pull,
            FileOperation: self.legacy,
        }

    async def list(self, message: FileList) -> Any:
        return await self.ctx.run(operations.list_dir, self.root(message.server_id), message.path)

    async def stat(self, message: FileStat) -> Any:
        return await self.ctx.run(operations.stat_path, self.root(message.server_id), message.path)

    async def read(self, message: FileRead) -> Any:
        handle, size = await self.ctx.run(
            operations.open_read, self.root(message.server_id), message.path
        )
        with handle:
            if message.max_bytes is not None and size > message.max_bytes:
                raise TooLarge(f"the file is larger than {message.max_bytes} bytes")
            async with self.ctx.streams.outgoing(message.stream_id) as out:
                while chunk := await self.ctx.run(handle.read, CHUNK_SIZE):
                    await out.send(chunk)
        return {"size": out.size}

    async def write(self, message: FileWrite) -> Any:
        root = self.root(message.server_id)
        quota = await self.quota(message.server_id, message.disk_limit_mb)
        async with self.ctx.streams.incoming(message.stream_id) as incoming:
            with operations.atomic_write(
                root, message.path, max_bytes=message.max_bytes, quota=quota
            ) as out:
                async for chunk in incoming.chunks():
                    await self.ctx.run(out.write, chunk)
                end = incoming.end
                if end is not None and end.sha256 and end.sha256 != incoming.sha256:
                    # Raising inside the block discards the temporary file.
                    raise ChecksumMismatch("the upload arrived damaged")
        await self.adopt(root, message.path)
        return {"path": root.normalize(message.path), "size": out.bytes_written}

    async def mkdir(self, message: FileMkdir) -> Any:
        root = self.root(message.server_id)
        await self.ctx.run(operations.make_dir, root, message.path)
        await self.adopt(root, message.path)
        return {"path": root.normalize(message.path)}

    async def delete(self, message: FileDelete) -> Any:
        try:
            count = await self.ctx.run(
                operations.delete_paths, self.root(message.server_id), list(message.paths)
            )
        finally:
            # Space was freed: measured afresh before the next write relies on it.
            self.ctx.disk.invalidate(message.server_id)
        return {"deleted": count}

    async def rename(self, message: FileRename) -> Any:
        root = self.root(message.server_id)
        await self.ctx.run(operations.rename, root, message.source, message.destination)
        return {"path": root.normalize(message.destination)}

    async def copy(self, message: FileCopy) -> Any:
        root = self.root(message.server_id)
        quota = await self.quota(message.server_id, message.disk_limit_mb)
        path = await self.ctx.run(
            functools.partial(operations.copy, quota=quota), root, message.path, message.destination
        )
        await self.adopt(root, path)
        return {"path": path}

    async def chmod(self, message: FileChmod) -> Any:
        root = self.root(message.server_id)
        await self.ctx.run(operations.chmod, root, message.path, message.mode)
        return {"path": root.normalize(message.path), "mode": f"{message.mode:04o}"}

    async def compress(self, message: FileCompress) -> Any:
        root = self.root(message.server_id)
        quota = await self.quota(message.server_id, message.disk_limit_mb)
        path = await self.ctx.run(
            archive_create.compress,
            root,
            list(message.paths),
            message.archive_name,
            message.destination,
            quota=quota,
        )
        await self.adopt(root, path)
        return {"archivePath": path}

    async def decompress(self, message: FileDecompress) -> Any:
        settings = self.ctx.settings
        root = self.root(message.server_id)
        quota = await self.quota(message.server_id, message.disk_limit_mb)
        extracted: dict[str, Any] = await self.ctx.run(
            archives.decompress,
            root,
            message.archive_path,
            message.target_path,
            max_bytes=settings.archive_max_bytes,
            max_files=settings.archive_max_files,
            quota=quota,
        )
        await self.adopt(root, str(extracted["targetPath"]))
        return extracted

    async def pull(self, message: FilePull) -> Any:
        settings = self.ctx.settings
        root = self.root(message.server_id)
        quota = await self.quota(message.server_id, message.disk_limit_mb)
        pulled = await pull_from_url(
            root,
            message.url,
            message.directory,
            message.filename,
            max_bytes=settings.pull_max_bytes,
            timeout=settings.pull_timeout,
            quota=quota,
        )
        await self.adopt(root, str(pulled["path"]))
        return pulled

    async def legacy(self, message: FileOperation) -> Any:
        """Catalyst's ``file_operation``: read, write, delete or list with inline content."""
        root = self.root(message.server_id)
        if message.operation == "list":
            return await self.ctx.run(operations.list_dir, root, message.path)
        if message.operation == "delete":
            deleted = await self.ctx.run(operations.delete_paths, root, [message.path])
            self.ctx.disk.invalidate(message.server_id)
            return {"deleted": deleted}
        if message.operation == "write":
            data = (message.content or "").encode()
            if len(data) > INLINE_MAX_BYTES:
                raise TooLarge("inline content is limited to 5 MB; stream larger files")
            quota = await self.quota(message.server_id, message.disk_limit_mb)
            await self.ctx.run(_write_all, root, message.path, data, quota)
            await self.adopt(root, message.path)
            return {"path": root.normalize(message.path), "size": len(data)}
        handle, size = await self.ctx.run(operations.open_read, root, message.path)
        with handle:
            if size > INLINE_MAX_BYTES:
                raise TooLarge("inline content is limited to 5 MB; stream larger files")
            data = await self.ctx.run(handle.read)
        return {"content": data.decode("utf-8", "replace"), "size": size}


def _write_all(root: ServerRoot, path: str, data: bytes, quota: Quota | None) -> None:
    with operations.atomic_write(root, path, max_bytes=None, quota=quota) as out:
        out.write(data)
