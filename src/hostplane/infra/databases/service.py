"""Server databases: hosts (admin resources) and the databases made on them.

Every change that touches a host talks to it inside the request's
transaction, after the rows are written and flushed: when the host refuses
or cannot be reached, the error rolls the rows back, so the panel never
keeps a database the host does not have. Saving a host connects to it first.

Limits are counted under row locks: the server's row (``databaseLimit``) and
the host's (``maxDatabases``), so two concurrent creates cannot both take
the last place.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.config import Settings
from hostplane.core.errors import Conflict, NotFound, ValidationFailed
from hostplane.core.principal import Principal
from hostplane.core.security.crypto import SealError, SecretBox
from hostplane.infra.databases.models import DatabaseHost, ServerDatabase
from hostplane.infra.databases.providers import engine_for
from hostplane.infra.databases.providers.base import DatabaseEngine, HostAccess, HostUnavailable
from hostplane.infra.databases.schemas import NAME_PATTERN, DatabaseOut
from hostplane.infra.locations import service as locations
from hostplane.infra.nodes import service as nodes
from hostplane.infra.servers import lifecycle
from hostplane.infra.servers.models import Server
from hostplane.infra.servers.service import load_for

DEFAULT_PORTS: Final = {"mariadb": 3306, "mysql": 3306, "postgresql": 5432}
_NAME = re.compile(NAME_PATTERN)
_PASSWORD_ALPHABET = string.ascii_letters + string.digits
_USER_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
PASSWORD_LENGTH: Final = 32


class DatabaseHostNotFound(NotFound):
    def __init__(self, host_id: str) -> None:
        super().__init__("database host", host_id)


class DatabaseNotFound(NotFound):
    def __init__(self, database_id: str) -> None:
        super().__init__("database", database_id)


class LimitReached(Conflict):
    code = "DATABASE_LIMIT_REACHED"


@dataclass(frozen=True, slots=True)
class Vault:
    """The panel's key, sealed per purpose, and the timeout every host call gets."""

    hosts: SecretBox
    databases: SecretBox
    timeout: float

    @classmethod
    def of(cls, settings: Settings) -> Vault:
        key = settings.secret_key.get_secret_value()
        return cls(
            hosts=SecretBox(key, "database-hosts"),
            databases=SecretBox(key, "server-databases"),
            timeout=settings.databases.connect_timeout_seconds,
        )


def connect(host: DatabaseHost, vault: Vault) -> DatabaseEngine:
    """The adapter for ``host``, with its administrative password opened."""
    try:
        password = vault.hosts.open(host.password_sealed).decode()
    except SealError as exc:
        # The panel's key changed since the host was saved: an operator must re-enter it.
        raise HostUnavailable(
            "The database host's stored password cannot be opened with the panel's key; "
            "save the host again with its password"
        ) from exc
    access = HostAccess(
        host=host.host,
        port=host.port,
        username=host.username,
        password=password,
        remote_pattern=host.remote_pattern,
        timeout=vault.timeout,
    )
    return engine_for(host.engine, access)


# --- hosts ------------------------------------------------------------------------------------


async def _counts(session: AsyncSession, host_ids: Sequence[str]) -> dict[str, int]:
    if not host_ids:
        return {}
    rows = await session.execute(
        select(ServerDatabase.host_id, func.count())
        .where(ServerDatabase.host_id.in_(host_ids))
        .group_by(ServerDatabase.host_id)
    )
    return {str(host_id): int(count) for host_id, count in rows}


async def list_hosts(session: AsyncSession) -> list[tuple[DatabaseHost, int]]:
    """Every host of the tenant with how many databases it holds."""
    hosts = (await session.scalars(select(DatabaseHost).order_by(DatabaseHost.name))).all()
    counts = await _counts(session, [h.id for h in hosts])
    return [(h, counts.get(h.id, 0)) for h in hosts]


async def get_host(
    session: AsyncSession, host_id: str, *, for_update: bool = False
) -> DatabaseHost:
    host = await session.get(DatabaseHost, host_id, with_for_update=for_update)
    if host is None:
        raise DatabaseHostNotFound(host_id)
    return host


async def host_with_count(session: AsyncSession, host_id: str) -> tuple[DatabaseHost, int]:
    host = await get_host(session, host_id)
    return host, (await _counts(session, [host.id])).get(host.id, 0)


async def _name_free(session: AsyncSession, name: str, *, excluding: str | None = None) -> None:
    statement = select(DatabaseHost.id).where(DatabaseHost.name == name)
    if excluding is not None:
        statement = statement.where(DatabaseHost.id != excluding)
    if await session.scalar(statement) is not None:
        raise Conflict("A database host with this name exists", details={"name": name})


async def _check_scope(
    session: AsyncSession, node_ids: Sequence[str], location_ids: Sequence[str]
) -> None:
    for node_id in node_ids:
        try:
            await nodes.get_node(session, node_id)
        except NotFound as exc:
            raise ValidationFailed("Unknown node", details={"nodeId": node_id}) from exc
    for location_id in location_ids:
        try:
            await locations.get_location(session, location_id)
        except NotFound as exc:
            raise ValidationFailed("Unknown location", details={"locationId": location_id}) from exc


async def create_host(
    session: AsyncSession, values: Mapping[str, Any], *, vault: Vault
) -> DatabaseHost:
    """Connect to the host with the given credentials, then save it.

    400 when the host refuses the credentials, 503 when it cannot be reached
    (both with the driver's reason), 409 for a name already used.
    """
    await _name_free(session, values["name"])
    await _check_scope(session, values.get("node_ids") or [], values.get("location_ids") or [])
    engine = values["engine"]
    host = DatabaseHost(
        name=values["name"],
        engine=engine,
        host=values["host"],
        port=values.get("port") or DEFAULT_PORTS[engine],
        public_host=values.get("public_host"),
        username=values["username"],
        password_sealed=vault.hosts.seal(values["password"].encode()),
        remote_pattern=values.get("remote_pattern") or "%",
        max_databases=values.get("max_databases"),
        node_ids=list(values.get("node_ids") or []),
        location_ids=list(values.get("location_ids") or []),
    )
    await connect(host, vault).validate()
    session.add(host)
    await session.flush()
    return host


_CONNECTION_FIELDS: Final = ("host", "port", "username", "password", "remote_pattern")


async def update_host(
    session: AsyncSession, host_id: str, changes: Mapping[str, Any], *, vault: Vault
) -> DatabaseHost:
    """Change a host; new connection details are tried before they are saved."""
    host = await get_host(session, host_id, for_update=True)
    if changes.get("name") is not None:
        await _name_free(session, changes["name"], excluding=host.id)
        host.name = changes["name"]
    await _check_scope(session, changes.get("node_ids") or [], changes.get("location_ids") or [])
    pattern = changes.get("remote_pattern")
    if pattern is not None and pattern != host.remote_pattern:
        # Existing accounts are user@old-pattern: rotate and drop would miss them.
        held = (await _counts(session, [host.id])).get(host.id, 0)
        if held:
            raise Conflict(
                "The remote pattern cannot change while the host holds databases",
                details={"databases": held},
            )
    for field in ("host", "port", "username", "remote_pattern", "node_ids", "location_ids"):
        if changes.get(field) is not None:
            setattr(host, field, changes[field])
    for field in ("public_host", "max_databases"):
        if field in changes:
            setattr(host, field, changes[field])
    if changes.get("password") is not None:
        host.password_sealed = vault.hosts.seal(changes["password"].encode())
    if any(changes.get(field) is not None for field in _CONNECTION_FIELDS):
        await connect(host, vault).validate()
    await session.flush()
    return host


async def delete_host(session: AsyncSession, host_id: str) -> None:
    """Remove a host the panel no longer uses (409 while it holds databases)."""
    host = await get_host(session, host_id, for_update=True)
    count = (await _counts(session, [host.id])).get(host.id, 0)
    if count:
        raise Conflict(
            f"This host still holds {count} server database(s); delete them first",
            details={"databases": count},
        )
    await session.delete(host)
    await session.flush()


# --- server databases -------------------------------------------------------------------------


def _out(row: ServerDatabase, host: DatabaseHost, vault: Vault) -> DatabaseOut:
    return DatabaseOut(
        id=row.id,
        name=row.name,
        username=row.username,
        password=_open(vault.databases, row.password_sealed),
        host=host.public_host or host.host,
        port=host.port,
        host_id=host.id,
        host_name=host.name,
        created_at=row.created_at,
    )


def _open(box: SecretBox, sealed: str) -> str:
    try:
        return box.open(sealed).decode()
    except SealError:
        # Sealed under an earlier panel key: rotating the password issues a new one.
        return ""


def short_id(server: Server) -> str:
    """The per-server prefix of database and user names (the UUID's first 8 hex digits)."""
    return server.uuid.replace("-", "")[:8].lower()


async def list_databases(
    session: AsyncSession, principal: Principal, server_id: str, *, vault: Vault
) -> list[DatabaseOut]:
    server = await load_for(session, principal, server_id, ("database.read",))
    rows = (
        await session.execute(
            select(ServerDatabase, DatabaseHost)
            .join(DatabaseHost, DatabaseHost.id == ServerDatabase.host_id)
            .where(ServerDatabase.server_id == server.id, ServerDatabase.status == "active")
            .order_by(ServerDatabase.created_at, ServerDatabase.id)
        )
    ).all()
    return [_out(row, host, vault) for row, host in rows]


async def _usable_host(session: AsyncSession, server: Server, host_id: str) -> DatabaseHost:
    host = await session.get(DatabaseHost, host_id, with_for_update=True)
    if host is None:
        raise ValidationFailed("Unknown database host", details={"hostId": host_id})
    if host.node_ids or host.location_ids:
        node = await nodes.get_node(session, server.node_id)
        if node.id not in host.node_ids and node.location_id not in host.location_ids:
            raise ValidationFailed(
                "This database host does not serve the server's node", details={"hostId": host_id}
            )
    return host


async def create_database(
    session: AsyncSession,
    principal: Principal,
    server_id: str,
    *,
    host_id: str,
    name: str,
    vault: Vault,
) -> DatabaseOut:
    """Create ``s{short id}_{name}`` and a user for it on the host.

    400 for a bad name or a host the server may not use, 409 when the name or
    user exists on the host or a limit is reached, 503 when the host cannot
    be reached (and nothing is kept).
    """
    if not _NAME.match(name):
        raise ValidationFailed(
            "Database names use 1 to 48 lowercase letters, digits and underscores",
            details={"name": name},
        )
    server = await load_for(session, principal, server_id, ("database.create",), for_update=True)
    lifecycle.ensure_not_suspended(server.status)
    host = await _usable_host(session, server, host_id)
    used = await session.scalar(
        select(func.count())
        .select_from(ServerDatabase)
        .where(ServerDatabase.server_id == server.id)
    )
    if (used or 0) >= server.database_limit:
        raise LimitReached(
            f"This server may have {server.database_limit} database(s)",
            details={"limit": server.database_limit},
        )
    on_host = (await _counts(session, [host.id])).get(host.id, 0)
    if host.max_databases is not None and on_host >= host.max_databases:
        raise LimitReached(
            "This database host is full", details={"hostId": host.id, "limit": host.max_databases}
        )
    prefix = short_id(server)
    full_name = f"s{prefix}_{name}"
    taken = await session.scalar(
        select(ServerDatabase.id).where(
            ServerDatabase.host_id == host.id, ServerDatabase.name == full_name
        )
    )
    if taken is not None:
        raise Conflict("A database with this name exists on the host", details={"name": full_name})
    username = f"u{prefix}_" + "".join(secrets.choice(_USER_SUFFIX_ALPHABET) for _ in range(8))
    password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))
    row = ServerDatabase(
        server_id=server.id,
        host_id=host.id,
        name=full_name,
        username=username,
        password_sealed=vault.databases.seal(password.encode()),
        status="active",
    )
    session.add(row)
    await session.flush()
    await connect(host, vault).create(database=full_name, username=username, password=password)
    return _out(row, host, vault)


async def _own(
    session: AsyncSession, principal: Principal, server_id: str, database_id: str, permission: str
) -> tuple[ServerDatabase, DatabaseHost]:
    server = await load_for(session, principal, server_id, (permission,))
    row = await session.get(ServerDatabase, database_id, with_for_update=True)
    if row is None or row.server_id != server.id or row.status != "active":
        raise DatabaseNotFound(database_id)
    return row, await get_host(session, row.host_id)


async def rotate_password(
    session: AsyncSession, principal: Principal, server_id: str, database_id: str, *, vault: Vault
) -> DatabaseOut:
    """A new password; the user's open sessions end. 503 when the host is unavailable."""
    row, host = await _own(session, principal, server_id, database_id, "database.rotate")
    password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))
    row.password_sealed = vault.databases.seal(password.encode())
    await session.flush()
    await connect(host, vault).rotate(username=row.username, password=password)
    return _out(row, host, vault)


async def delete_database(
    session: AsyncSession, principal: Principal, server_id: str, database_id: str, *, vault: Vault
) -> None:
    """Drop the database and its user on the host (ending their sessions), then the row."""
    row, host = await _own(session, principal, server_id, database_id, "database.delete")
    await session.delete(row)
    await session.flush()
    await connect(host, vault).drop(database=row.name, username=row.username)
