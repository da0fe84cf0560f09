"""Moving a server between nodes: export on the source, import on the target.

The source streams an archive of the stopped server's files, either straight
to the target's peer listener (``transfer_push``, see
:mod:`hostplane.agent.peers`) or through the panel (``transfer_export``); the
target receives it into ``<data dir>/transfers/<server id>/``, checks the
sha256 the source announced, and extracts it there. Nothing replaces the
server's folder until the panel says ``transfer_commit``; ``transfer_abort``
throws the staged copy away, so a transfer that fails at any step leaves the
source untouched and the target clean.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from hostplane.agent.backups import archive
from hostplane.agent.backups.store import ChecksumMismatch, validate_id
from hostplane.agent.disk import limit_bytes
from hostplane.agent.handlers.context import HandlerContext
from hostplane.agent.peers import push
from hostplane.agent.runtime import AgentRuntimeError, ServerAlreadyRunning
from hostplane.agent.streams import OutgoingStream
from hostplane.protocol import (
    StreamEnd,
    StreamError,
    TransferAbort,
    TransferCleanup,
    TransferCommit,
    TransferExport,
    TransferImport,
    TransferPrepare,
    TransferPush,
    WireModel,
)


class _Incoming(Protocol):
    """An arriving archive: the panel's relayed stream or a peer's connection."""

    size: int
    end: StreamEnd | None

    def chunks(self) -> AsyncIterator[bytes]: ...


class NothingStaged(AgentRuntimeError):
    code = "NOT_FOUND"


class TransferHandlers:
    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        # Relayed exports under way, by server: an abort stops one at once
        # (its reader may be a worker that died) instead of after a stall.
        self._exports: dict[str, OutgoingStream] = {}

    def handlers(self) -> dict[type[WireModel], Any]:
        return {
            TransferExport: self.export,
            TransferPrepare: self.prepare,
            TransferPush: self.push,
            TransferImport: self.import_,
            TransferCommit: self.commit,
            TransferAbort: self.abort,
            TransferCleanup: self.cleanup,
        }

    def staging(self, server_id: str) -> Path:
        return self.ctx.data_dir / "transfers" / validate_id(server_id, "server id")

    async def _ensure_stopped(self, server_id: str) -> None:
        if await self.ctx.is_running(server_id):
            raise ServerAlreadyRunning("the server must be stopped to move it")

    def _archive(self, server_id: str, request_id: str | None) -> archive.ArchiveStream:
        source = self.ctx.server_dir(server_id)
        source.mkdir(parents=True, exist_ok=True)
        # Progress in source bytes: the archive's size is known only at the end.
        return archive.ArchiveStream(
            source,
            level=self.ctx.settings.backup_compression_level,
            progress=self.ctx.progress(server_id, "transfer", request_id),
        )

    async def export(self, message: TransferExport) -> Any:
        """Stream the archive to the panel, which relays it to the target."""
        server_id = message.server_id
        await self._ensure_stopped(server_id)
        stream = self._archive(server_id, message.request_id)
        try:
            with self.ctx.exclusive(server_id, "being copied to another node"):
                async with self.ctx.streams.outgoing(message.stream_id) as out:
                    self._exports[server_id] = out
                    while (chunk := await self.ctx.run(next, stream, None)) is not None:
                        await out.send(chunk)
        finally:
            self._exports.pop(server_id, None)
            stream.close()
        return {"size": out.size, "sha256": out.sha256}

    async def prepare(self, message: TransferPrepare) -> Any:
        """Expect the source's direct connection; ``url`` is null without a listener."""
        peers = self.ctx.peers
        if peers.url is None:
            return {"url": None}
        peers.expect(message.server_id, message.token)
        return {"url": peers.url}

    async def push(self, message: TransferPush) -> Any:
        """Stream the archive straight to the target's peer listener."""
        server_id = message.server_id
        await self._ensure_stopped(server_id)
        stream = self._archive(server_id, message.request_id)
        ca_file = self.ctx.settings.transfer_ca_file

        async def next_chunk() -> bytes | None:
            chunk: bytes | None = await self.ctx.run(next, stream, None)
            return chunk

        try:
            with self.ctx.exclusive(server_id, "being copied to another node"):
                size, sha256 = await push(
                    message.url,
                    message.token,
                    server_id,
                    next_chunk,
                    ca_file=str(ca_file) if ca_file is not None else None,
                )
        finally:
            stream.close()
        return {"size": size, "sha256": sha256}

    def _source(self, message: TransferImport) -> contextlib.AbstractAsyncContextManager[_Incoming]:
        if message.direct:
            return self.ctx.peers.accept(message.server_id)
        return self.ctx.streams.incoming(message.stream_id)

    async def import_(self, message: TransferImport) -> Any:
        server_id = message.server_id
        await self._ensure_stopped(server_id)
        staging = self.staging(server_id)
        await self.ctx.run(shutil.rmtree, staging, True)
        staging.mkdir(parents=True)
        receiver = archive.ArchiveReceiver(
            staging / "archive.tar.zst", max_bytes=self.ctx.settings.archive_max_bytes
        )
        progress = self.ctx.progress(server_id, "transfer", message.request_id)
        try:
            async with self._source(message) as incoming:
                async for chunk in incoming.chunks():
                    await self.ctx.run(receiver.write, chunk)
                    progress(incoming.size, 0)
                end = incoming.end
                if end is None or not end.sha256:
                    raise ChecksumMismatch("the source did not announce a checksum")
                # Verified before the source is told the copy arrived.
                received = await self.ctx.run(receiver.finish, end.sha256)
            files = staging / "files"
            files.mkdir()
            info = await self.ctx.run(
                archive.restore_archive,
                staging / "archive.tar.zst",
                files,
                max_bytes=self.ctx.settings.archive_max_bytes,
                max_files=self.ctx.settings.archive_max_files,
                # The server's allocation travels with it: files that would
                # not fit here are not accepted.
                disk_limit=limit_bytes(message.disk_limit_mb),
            )
        except BaseException:
            receiver.abort()
            await self.ctx.run(shutil.rmtree, staging, True)
            raise
        (staging / "archive.tar.zst").unlink(missing_ok=True)
        return {"size": received.size_bytes, "sha256": received.sha256, "files": info.files}

    async def commit(self, message: TransferCommit) -> Any:
        server_id = message.server_id
        staged = self.staging(server_id) / "files"
        if not staged.is_dir():
            raise NothingStaged("no transfer is staged for this server")
        target = self.ctx.server_dir(server_id)
        await self.ctx.run(_swap_in, staged, target, self.staging(server_id) / "previous")
        self.ctx.disk.invalidate(server_id)
        await self.ctx.run(shutil.rmtree, self.staging(server_id), True)
        return {"committed": True}

    async def abort(self, message: TransferAbort) -> Any:
        server_id = message.server_id
        self.ctx.peers.cancel(server_id)
        if (export := self._exports.get(server_id)) is not None:
            # Sent to the source as well: its export stops and frees the server.
            export.fail(StreamError(stream_id=export.stream_id, message="the transfer was aborted"))
        await self.ctx.run(shutil.rmtree, self.staging(server_id), True)
        if message.remove_files:
            await self._ensure_stopped(server_id)
            await self.ctx.run(shutil.rmtree, self.ctx.server_dir(server_id), True)
        return {"aborted": True}

    async def cleanup(self, message: TransferCleanup) -> Any:
        server_id = message.server_id
        await self._ensure_stopped(server_id)
        await self.ctx.run(shutil.rmtree, self.ctx.server_dir(server_id), True)
        return {"removed": True}


def _swap_in(staged: Path, target: Path, aside: Path) -> None:
    """Replace ``target`` with ``staged`` by renames (same filesystem)."""
    if target.exists():
        target.rename(aside)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged.rename(target)
    shutil.rmtree(aside, ignore_errors=True)
