"""A server's files: every file route of every document lands here.

The files live on the server's node; the agent does the work and confines
every path to the server's folder. The panel authorizes, refuses obviously
bad input before anything reaches the node, talks to the agent through
:class:`~hostplane.infra.nodes.rpc.AgentRpc`, and writes the audit entry.

Checks run in the servers' order: the server exists in the caller's tenant
(404), the caller may act on it (403), it is not suspended for changes
(423), the node is online (503), the input is sound (400); then the agent
answers (its refusals keep their status: 400, 404, 409, 413).

Unlike most services, these functions take the runtime and open their own
short units of work: a file operation waits on a node for seconds (an
upload, an archive: minutes), and holding a transaction across that wait
would hold SQLite's write lock, stalling every other writer of the panel,
the gateway's heartbeats included. Authorization reads in one short
transaction; the audit entry is written in another once the node has done
the work, so an entry exists only for work that was done.

Permissions (the first is Catalyst's; the others are the equivalents of
QeinTech and Pterodactyl): reading lists and downloads need ``file.read``
(reading a file's content also accepts ``file.read-content``); creating and
uploading ``file.write`` or ``file.create``; editing, renaming and changing
modes ``file.write`` or ``file.update`` (``/write`` accepts all three, as it
creates or replaces); deleting ``file.delete``; archives ``file.archive`` or
``file.write``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

from hostplane.core.clock import utcnow
from hostplane.core.context import RequestContext, attach_context
from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import Conflict, HostplaneError, ValidationFailed
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.infra.files import links
from hostplane.infra.files.links import LinkPurpose
from hostplane.infra.files.requests import (
    check_name,
    check_path,
    check_url,
    invalid,
    join,
    parent,
    parse_mode,
)
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.rpc import CALL_TIMEOUT, AgentFailed, AgentRpc, Download
from hostplane.infra.servers import lifecycle
from hostplane.infra.servers import service as servers
from hostplane.platform.audit import service as audit
from hostplane.protocol import (
    FileChmod,
    FileCompress,
    FileCopy,
    FileDecompress,
    FileDelete,
    FileList,
    FileMkdir,
    FilePull,
    FileRead,
    FileRename,
    FileStat,
    FileWrite,
)

# Limits come from settings ``files.upload_max_bytes`` (Catalyst's 100 MB by
# default) and ``files.content_max_bytes`` (text inside JSON: GET .../content,
# POST .../write, .../create).

# How long to wait for the agent's answer. A listing comes back in
# milliseconds, so a short wait tells a caller quickly that the agent is not
# there; deleting or copying trees, archives and pulls may take minutes.
QUICK_ANSWER: Final = 10.0
ANSWER: Final = CALL_TIMEOUT
LONG_ANSWER: Final = 15 * 60.0

# The agent's own bounds (hostplane.agent.files.confine), checked here too.

READ: Final = ("file.read",)
READ_CONTENT: Final = ("file.read-content", "file.read")
CREATE: Final = ("file.write", "file.create")
UPDATE: Final = ("file.write", "file.update")
WRITE: Final = ("file.write", "file.create", "file.update")
DELETE: Final = ("file.delete",)
ARCHIVE: Final = ("file.archive", "file.write")


class PayloadTooLarge(HostplaneError):
    status = 413
    code = "TOO_LARGE"


@dataclass(frozen=True, slots=True)
class FileTarget:
    """A server the caller may act on, where its files are, and who acts."""

    server_id: str
    node_id: str
    tenant_id: str
    context: RequestContext
    disk_limit_mb: int | None = None
    """The server's disk allocation, sent with every request so the node
    refuses writes past it (``DISK_LIMIT_EXCEEDED``)."""

    @property
    def principal(self) -> Principal:
        return self.context.principal


# --- input checks -----------------------------------------------------------------------------


async def open_target(
    runtime: Runtime,
    context: RequestContext,
    server_id: str,
    permissions: Iterable[str],
    *,
    change: bool,
) -> FileTarget:
    """Authorize ``context.principal`` on the server: 404, 403, then 423 (for a
    ``change`` on a suspended server) and 503 (node offline)."""
    principal = context.principal
    async with runtime.unit_of_work(read_only=True) as session:
        if principal.kind != "system":
            scope_to_tenant(session, principal.tenant_id)
        server = await servers.load_for(session, principal, server_id, permissions)
        if change:
            lifecycle.ensure_not_suspended(server.status)
        node = await nodes.get_node(session, server.node_id)
        nodes.ensure_online(node)
        return FileTarget(server.id, node.id, server.tenant_id, context, server.allocated_disk_mb)


async def redeem_link(
    runtime: Runtime,
    context: RequestContext,
    server_id: str,
    token: str,
    *,
    purpose: LinkPurpose,
) -> tuple[FileTarget, str]:
    """Use an upload link: the target it acts on (as its user) and its path.

    The link is spent before the node is asked for anything, so a link never
    works twice even when the first use fails half-way. (Download links are
    spent later, see :func:`open_link`.)
    """
    target, path, claims = await open_link(runtime, context, server_id, token, purpose=purpose)
    await links.spend(runtime, claims)
    return target, path


async def open_link(
    runtime: Runtime,
    context: RequestContext,
    server_id: str,
    token: str,
    *,
    purpose: LinkPurpose,
) -> tuple[FileTarget, str, links.LinkClaims]:
    """Check a one-time link without spending it: the target it acts on (as its
    user), its path, and its claims for :func:`links.spend`. 410 if it was used."""
    claims = links.read(
        runtime.settings.secret_key.get_secret_value(),
        token,
        server_id=server_id,
        purpose=purpose,
    )
    async with runtime.unit_of_work(read_only=True) as session:
        scope_to_tenant(session, claims.tenant_id)
        principal = await links.principal_for(session, claims)
        await links.ensure_unused(session, claims)
    acting = dataclasses.replace(context, principal=principal)
    permissions = READ if purpose == "download" else CREATE
    target = await open_target(runtime, acting, server_id, permissions, change=purpose == "upload")
    return target, claims.path, claims


def issue_link(
    runtime: Runtime, target: FileTarget, path: str, *, purpose: LinkPurpose
) -> tuple[str, datetime]:
    return links.issue(
        runtime.settings.secret_key.get_secret_value(),
        target.principal,
        server_id=target.server_id,
        tenant_id=target.tenant_id,
        path=path,
        purpose=purpose,
    )


async def _audit(
    runtime: Runtime, target: FileTarget, action: str, metadata: dict[str, Any]
) -> None:
    async with runtime.unit_of_work() as session:
        scope_to_tenant(session, target.tenant_id)
        attach_context(session, target.context)
        audit.record(
            session,
            action=action,
            resource_type="server",
            resource_id=target.server_id,
            metadata=metadata,
            actor=target.principal,
        )


def _rpc(runtime: Runtime, target: FileTarget) -> AgentRpc:
    return AgentRpc(runtime.bus, tenant_id=target.tenant_id)


# --- reading ----------------------------------------------------------------------------------


async def list_files(runtime: Runtime, target: FileTarget, path: str | None) -> list[Any]:
    folder = check_path(path, default="/")
    found = await _rpc(runtime, target).call(
        target.node_id,
        FileList(server_id=target.server_id, disk_limit_mb=target.disk_limit_mb, path=folder),
        within=QUICK_ANSWER,
    )
    return list(found or [])


async def stat(runtime: Runtime, target: FileTarget, path: str) -> dict[str, Any]:
    found = await _rpc(runtime, target).call(
        target.node_id,
        FileStat(server_id=target.server_id, disk_limit_mb=target.disk_limit_mb, path=path),
        within=QUICK_ANSWER,
    )
    return dict(found or {})


async def read_content(runtime: Runtime, target: FileTarget, path: str | None) -> tuple[str, int]:
    """A file's text (invalid UTF-8 shows as U+FFFD); 413 beyond ``files.content_max_bytes``."""
    file_path = check_path(path)
    message = FileRead(
        server_id=target.server_id,
        disk_limit_mb=target.disk_limit_mb,
        path=file_path,
        stream_id="",
        max_bytes=runtime.settings.files.content_max_bytes,
    )
    async with _rpc(runtime, target).download(target.node_id, message) as download:
        data = bytearray()
        async for chunk in download.chunks():
            data += chunk
            if len(data) > runtime.settings.files.content_max_bytes:
                # The file grew after the agent checked its size.
                raise PayloadTooLarge(
                    f"The file is larger than {runtime.settings.files.content_max_bytes} bytes"
                )
    return data.decode("utf-8", "replace"), len(data)


def open_download(
    runtime: Runtime, target: FileTarget, path: str
) -> AbstractAsyncContextManager[Download]:
    """The agent's stream of a file; entering it raises the agent's refusal (404, 400)."""
    message = FileRead(
        server_id=target.server_id, disk_limit_mb=target.disk_limit_mb, path=path, stream_id=""
    )
    return _rpc(runtime, target).download(target.node_id, message)


async def ensure_file(runtime: Runtime, target: FileTarget, path: str) -> None:
    """404 unless ``path`` exists; 400 if it is a folder (a link to it would not work)."""
    found = await stat(runtime, target, path)
    if found.get("isDirectory"):
        raise ValidationFailed(f"{path} is a folder", code="IS_A_DIRECTORY")


# --- writing ----------------------------------------------------------------------------------


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _write(
    runtime: Runtime, target: FileTarget, path: str, chunks: AsyncIterable[bytes], limit: int
) -> dict[str, Any]:
    message = FileWrite(
        server_id=target.server_id,
        disk_limit_mb=target.disk_limit_mb,
        path=path,
        stream_id="",
        max_bytes=limit,
    )
    written = await _rpc(runtime, target).upload(target.node_id, message, chunks)
    return dict(written or {})


def _content_bytes(runtime: Runtime, content: str) -> bytes:
    data = content.encode("utf-8", "surrogatepass")
    limit = runtime.settings.files.content_max_bytes
    if len(data) > limit:
        raise PayloadTooLarge(f"Content is limited to {limit} bytes; upload larger files")
    return data


async def write_file(
    runtime: Runtime, target: FileTarget, path: str | None, content: str
) -> dict[str, Any]:
    """Create or replace a file with ``content`` (QeinTech's ``/write``)."""
    file_path = check_path(path)
    data = _content_bytes(runtime, content)
    written = await _write(
        runtime, target, file_path, _one(data), runtime.settings.files.content_max_bytes
    )
    await _audit(runtime, target, "file.write", {"path": written.get("path", file_path)})
    return written


async def create(
    runtime: Runtime,
    target: FileTarget,
    path: str | None,
    *,
    content: str | None,
    is_directory: bool,
) -> dict[str, Any]:
    """Catalyst's ``/create``: a new folder, or a new file (409 if it exists)."""
    new_path = check_path(path)
    if is_directory:
        if content is not None:
            raise invalid("content", "a directory has no content")
        made = await _rpc(runtime, target).call(
            target.node_id,
            FileMkdir(
                server_id=target.server_id, disk_limit_mb=target.disk_limit_mb, path=new_path
            ),
            within=ANSWER,
        )
        result = dict(made or {})
        await _audit(
            runtime, target, "file.create", {"path": result.get("path"), "directory": True}
        )
        return result
    data = _content_bytes(runtime, content or "")
    try:
        await stat(runtime, target, new_path)
    except AgentFailed as exc:
        if exc.agent_code != "NOT_FOUND":
            raise
    else:
        raise Conflict(f"{new_path} already exists", details={"path": new_path})
    written = await _write(
        runtime, target, new_path, _one(data), runtime.settings.files.content_max_bytes
    )
    await _audit(runtime, target, "file.create", {"path": written.get("path", new_path)})
    return written


async def _limited(chunks: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes]:
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            # Raised inside the upload: rpc tells the agent, which discards the partial file.
            raise PayloadTooLarge(f"Uploads are limited to {limit} bytes")
        yield chunk


async def upload(
    runtime: Runtime,
    target: FileTarget,
    directory: str,
    filename: str,
    chunks: AsyncIterable[bytes],
) -> dict[str, Any]:
    """Stream one uploaded file into ``directory``; 413 beyond ``files.upload_max_bytes``."""
    folder = check_path(directory, default="/")
    name = check_name(filename, field="filename")
    limit = runtime.settings.files.upload_max_bytes
    written = await _write(runtime, target, join(folder, name), _limited(chunks, limit), limit)
    await _audit(
        runtime, target, "file.upload", {"path": written.get("path"), "size": written.get("size")}
    )
    return written


async def delete(runtime: Runtime, target: FileTarget, paths: list[str]) -> int:
    """Delete files and whole folders (recursive); how many paths were deleted."""
    if not paths:
        raise invalid("paths", "paths must name at least one file")
    checked = [check_path(p, field="paths") for p in paths]
    result = await _rpc(runtime, target).call(
        target.node_id,
        FileDelete(server_id=target.server_id, disk_limit_mb=target.disk_limit_mb, paths=checked),
        within=LONG_ANSWER,
    )
    deleted = int((result or {}).get("deleted", 0))
    await _audit(runtime, target, "file.delete", {"paths": checked, "deleted": deleted})
    return deleted


async def rename(runtime: Runtime, target: FileTarget, source: str, destination: str) -> str:
    old = check_path(source, field="from")
    new = check_path(destination, field="to")
    result = await _rpc(runtime, target).call(
        target.node_id,
        FileRename(
            server_id=target.server_id,
            disk_limit_mb=target.disk_limit_mb,
            source=old,
            destination=new,
        ),
        within=ANSWER,
    )
    path = str((result or {}).get("path", new))
    await _audit(runtime, target, "file.rename", {"from": old, "to": path})
    return path


async def copy(runtime: Runtime, target: FileTarget, path: str, destination: str | None) -> str:
    source = check_path(path)
    copy_to = check_path(destination, field="destination") if destination is not None else None
    result = await _rpc(runtime, target).call(
        target.node_id,
        FileCopy(
            server_id=target.server_id,
            disk_limit_mb=target.disk_limit_mb,
            path=source,
            destination=copy_to,
        ),
        within=LONG_ANSWER,
    )
    made = str((result or {}).get("path"))
    await _audit(runtime, target, "file.copy", {"from": source, "to": made})
    return made


async def chmod(runtime: Runtime, target: FileTarget, path: str, mode: int | str) -> str:
    file_path = check_path(path)
    bits = parse_mode(mode)
    await _rpc(runtime, target).call(
        target.node_id,
        FileChmod(
            server_id=target.server_id,
            disk_limit_mb=target.disk_limit_mb,
            path=file_path,
            mode=bits,
        ),
        within=ANSWER,
    )
    shown = f"{bits:04o}"
    await _audit(runtime, target, "file.chmod", {"path": file_path, "mode": shown})
    return shown


async def compress(
    runtime: Runtime,
    target: FileTarget,
    paths: list[str],
    archive_name: str | None,
    destination: str,
) -> str:
    if not paths:
        raise invalid("paths", "paths must name at least one file or folder")
    checked = [check_path(p, field="paths") for p in paths]
    name = (
        check_name(archive_name, field="archiveName")
        if archive_name is not None
        else f"archive-{utcnow():%Y-%m-%d-%H%M%S}.tar.gz"
    )
    folder = check_path(destination, field="destination", default="/")
    result = await _rpc(runtime, target).call(
        target.node_id,
        FileCompress(
            server_id=target.server_id,
            disk_limit_mb=target.disk_limit_mb,
            paths=checked,
            archive_name=name,
            destination=folder,
        ),
        within=LONG_ANSWER,
    )
    archive_path = str((result or {}).get("archivePath"))
    await _audit(runtime, target, "file.compress", {"paths": checked, "archive": archive_path})
    return archive_path


async def decompress(
    runtime: Runtime, target: FileTarget, archive_path: str, target_path: str | None
) -> dict[str, Any]:
    archive = check_path(archive_path, field="archivePath")
    into = check_path(target_path, field="targetPath", default=parent(archive))
    result = dict(
        await _rpc(runtime, target).call(
            target.node_id,
            FileDecompress(
                server_id=target.server_id,
                disk_limit_mb=target.disk_limit_mb,
                archive_path=archive,
                target_path=into,
            ),
            within=LONG_ANSWER,
        )
        or {}
    )
    await _audit(
        runtime,
        target,
        "file.decompress",
        {
            "archive": archive,
            "target": result.get("targetPath", into),
            "files": result.get("files"),
        },
    )
    return result


async def pull(
    runtime: Runtime, target: FileTarget, url: str, directory: str, filename: str | None
) -> dict[str, Any]:
    """Have the node download ``url`` into ``directory`` (the agent refuses private
    addresses with 400 ``URL_REJECTED``)."""
    source = check_url(url)
    folder = check_path(directory, field="directory", default="/")
    name = check_name(filename, field="filename") if filename is not None else None
    result = dict(
        await _rpc(runtime, target).call(
            target.node_id,
            FilePull(
                server_id=target.server_id,
                disk_limit_mb=target.disk_limit_mb,
                url=source,
                directory=folder,
                filename=name,
            ),
            within=LONG_ANSWER,
        )
        or {}
    )
    await _audit(
        runtime,
        target,
        "file.pull",
        {"url": urlsplit(source)._replace(query="", fragment="").geturl(), **result},
    )
    return result
