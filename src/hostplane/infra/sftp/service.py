"""Who may open a server's files over SFTP.

The node runs the SFTP server, but grants, bans, login sessions and API keys
live in the panel's database, so the node asks (``sftp_authorize`` over its
socket) and the panel answers here. The credential is checked exactly as a
request's bearer token is (:func:`~hostplane.identity.authenticator.authenticate_credential`),
and the server's permissions with the one authorization function every file
route uses (:func:`~hostplane.infra.servers.service.authorize_any`).

A refusal says only ``UNAUTHENTICATED`` or ``FORBIDDEN``: an SFTP client
learns nothing about why (unknown server, another node's server, a ban, a
missing grant), and neither does whoever controls the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import Forbidden, NotFound, Unauthorized
from hostplane.core.runtime import Runtime
from hostplane.identity.access.service import AccessDenied
from hostplane.identity.authenticator import authenticate_credential
from hostplane.identity.users.models import User
from hostplane.infra.servers import service as servers
from hostplane.protocol import SftpActivity

LOGIN: Final = "file.sftp"
# What the node enforces per operation (see hostplane.agent.sftp.handler).
FILE_PERMISSIONS: Final = ("file.read", "file.create", "file.update", "file.delete", "file.write")
CHANGES: Final = frozenset({"file.create", "file.update", "file.delete", "file.write"})


class SftpUnauthenticated(Unauthorized):
    code = "UNAUTHENTICATED"


class SftpForbidden(Forbidden):
    code = "FORBIDDEN"


@dataclass(frozen=True, slots=True)
class SftpGrant:
    """Who logged in, and which file permissions they hold on the server."""

    user_id: str
    permissions: tuple[str, ...]
    disk_limit_mb: int | None = None
    """The server's disk allocation: the node refuses SFTP writes past it."""

    def data(self) -> dict[str, object]:
        return {
            "userId": self.user_id,
            "permissions": list(self.permissions),
            "diskLimitMb": self.disk_limit_mb,
        }


async def authorize(
    runtime: Runtime,
    *,
    node_id: str,
    server_id: str,
    credential: str,
    client_ip: str | None,
) -> SftpGrant:
    """The grant of ``credential`` on ``server_id``, which must be placed on ``node_id``.

    Raises :class:`SftpUnauthenticated` for a credential that is not a live
    token or key (a banned or disabled user's included), and
    :class:`SftpForbidden` when the server is unknown to the caller's tenant,
    on another node, or the caller lacks ``file.sftp`` on it. On a suspended
    server only reading remains.
    """
    try:
        principal = await authenticate_credential(runtime, credential, ip=client_ip)
    except Unauthorized:
        raise SftpUnauthenticated("Authentication failed") from None
    # Someone whose role requires two-factor and who has not enrolled holds
    # no permission until they do, over HTTP and here alike.
    if not principal.is_authenticated or principal.needs_two_factor or principal.user_id is None:
        raise SftpUnauthenticated("Authentication failed")
    async with runtime.unit_of_work(read_only=True) as session:
        scope_to_tenant(session, principal.tenant_id)
        try:
            server = await servers.load_for(session, principal, server_id, (LOGIN,))
        except (NotFound, AccessDenied):
            raise SftpForbidden("Access denied") from None
        if server.node_id != node_id:
            raise SftpForbidden("Access denied")
        held = [LOGIN]
        for permission in FILE_PERMISSIONS:
            if server.status == "suspended" and permission in CHANGES:
                continue
            try:
                await servers.authorize_any(session, principal, (permission,), server)
            except AccessDenied:
                continue
            held.append(permission)
        disk_limit_mb = server.allocated_disk_mb
    return SftpGrant(
        user_id=principal.user_id, permissions=tuple(held), disk_limit_mb=disk_limit_mb
    )


_VERBS: Final = {
    "upload": "uploaded",
    "mkdir": "created the folder",
    "delete": "deleted",
    "rename": "renamed",
    "chmod": "changed the permissions of",
}


async def activity_line(session: AsyncSession, activity: SftpActivity) -> str:
    """``SFTP: alice uploaded /world/level.dat (100000 bytes)`` for the server's log."""
    user = await session.get(User, activity.user_id)
    who = user.username if user is not None else f"user {activity.user_id}"
    line = f"SFTP: {who} {_VERBS[activity.action]} {activity.path}"
    if activity.bytes is not None:
        line += f" ({activity.bytes} bytes)"
    return line
