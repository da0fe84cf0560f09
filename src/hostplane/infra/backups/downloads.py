"""Backup downloads through one-time links (the archive streams from its node).

Asking for a link takes ``backup.download`` (or ``backup.read``); the link
itself carries no bearer token and works once, for five minutes, as the user
who asked — whose permissions are checked again when it is used. It is
spent when the archive's first chunk has arrived from the node, so a
download that fails before that leaves the link usable for a retry.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import Conflict
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.infra.backups.models import Backup
from hostplane.infra.backups.service import BackupNotFound
from hostplane.infra.files import links
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.rpc import AgentRpc, Download
from hostplane.infra.servers.service import load_for
from hostplane.protocol import BackupRead

PERMISSIONS = ("backup.download", "backup.read")


@dataclass(frozen=True)
class BackupFile:
    backup_id: str
    server_id: str
    node_id: str
    tenant_id: str
    name: str
    size_bytes: int | None


async def _locate(
    runtime: Runtime, principal: Principal, server_id: str, backup_id: str
) -> BackupFile:
    async with runtime.unit_of_work(read_only=True) as session:
        if principal.kind != "system":
            scope_to_tenant(session, principal.tenant_id)
        server = await load_for(session, principal, server_id, PERMISSIONS)
        backup = await session.get(Backup, backup_id)
        if backup is None or backup.server_id != server.id:
            raise BackupNotFound(backup_id)
        if backup.status != "completed":
            raise Conflict(
                f"Only a completed backup can be downloaded (this one is {backup.status})"
            )
        nodes.ensure_online(await nodes.get_node(session, backup.node_id))
        return BackupFile(
            backup.id, server.id, backup.node_id, backup.tenant_id, backup.name, backup.size_bytes
        )


async def issue_link(
    runtime: Runtime, principal: Principal, server_id: str, backup_id: str
) -> tuple[str, datetime]:
    found = await _locate(runtime, principal, server_id, backup_id)
    return links.issue(
        runtime.settings.secret_key.get_secret_value(),
        principal,
        server_id=found.server_id,
        tenant_id=found.tenant_id,
        path=found.backup_id,
        purpose="backup",
    )


async def redeem(
    runtime: Runtime, server_id: str, backup_id: str, token: str
) -> tuple[BackupFile, links.LinkClaims]:
    """Check the link (410 if it was used) and the access of its user, without
    spending it: :func:`links.spend` does that once the archive is flowing."""
    claims = links.read(
        runtime.settings.secret_key.get_secret_value(), token, server_id=server_id, purpose="backup"
    )
    if claims.path != backup_id:
        raise links.InvalidLink("This link is for another backup")
    async with runtime.unit_of_work(read_only=True) as session:
        scope_to_tenant(session, claims.tenant_id)
        principal = await links.principal_for(session, claims)
        await links.ensure_unused(session, claims)
    return await _locate(runtime, principal, server_id, backup_id), claims


@contextlib.asynccontextmanager
async def open_archive(runtime: Runtime, found: BackupFile) -> AsyncIterator[Download]:
    calls = AgentRpc(runtime.bus, tenant_id=found.tenant_id)
    message = BackupRead(server_id=found.server_id, backup_id=found.backup_id, stream_id="")
    async with calls.download(found.node_id, message) as download:
        yield download
