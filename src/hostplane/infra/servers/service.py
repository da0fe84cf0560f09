"""Servers: placement under capacity, the lifecycle, power and agent reports.

One service behind every shape of the documents (Catalyst's ``/start``,
QeinTech's ``/power {signal}``, SkyPANEL's ``/power {action}``). The service
never talks to a socket: a power, install or delete decides here what the
agent must be told (a :class:`PlannedCommand`), and
:mod:`hostplane.infra.servers.commands` builds that message and delivers it,
acknowledged, once the decision has committed.

Checks run in one order everywhere: the server exists in the tenant (404),
the caller may act on it (403), it is not suspended (423), the lifecycle
allows the change (409), the node is online (503).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog
from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.db.session import record_event
from hostplane.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from hostplane.core.events.bus import Event
from hostplane.core.pagination import PageMeta, PageParams, paginate
from hostplane.core.principal import Principal
from hostplane.identity.access import service as access
from hostplane.identity.users import service as users
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.models import Node, PendingServerDelete
from hostplane.infra.servers import lifecycle
from hostplane.infra.servers.lifecycle import LIVE, OFF
from hostplane.infra.servers.models import Server, ServerAllocation
from hostplane.infra.servers.variables import apply_changes, variables_for
from hostplane.infra.templates import service as templates
from hostplane.infra.templates.models import Template
from hostplane.platform.jobs import service as jobs
from hostplane.platform.webhooks.service import emit

log = structlog.get_logger(__name__)

PowerAction = Literal["start", "stop", "restart", "kill"]
RestartPolicy = Literal["always", "on-failure", "never"]
RESTART_POLICIES: Final = ("always", "on-failure", "never")


RESOURCE_FIELDS: Final = ("allocated_memory_mb", "allocated_cpu_cores", "allocated_disk_mb")

# Permissions that admit each action; the first is Catalyst's, the others the
# equivalents of QeinTech and Pterodactyl (a subuser granted control.power may power).
POWER_PERMISSIONS: Final[dict[str, tuple[str, ...]]] = {
    "start": ("server.start", "control.power", "control.start"),
    "stop": ("server.stop", "control.power", "control.stop"),
    "restart": ("server.restart", "control.power", "control.restart"),
    "kill": ("server.kill", "control.power", "control.stop"),
}
COMMAND_PERMISSIONS: Final = ("server.console", "control.console")
INSTALL_PERMISSIONS: Final = ("server.install", "settings.reinstall")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")


class ServerNotFound(NotFound):
    def __init__(self, server_id: str) -> None:
        super().__init__("server", server_id)


class InsufficientResources(ValidationFailed):
    def __init__(self, shortfalls: dict[str, dict[str, float]]) -> None:
        super().__init__("Node does not have enough resources", details={"shortfalls": shortfalls})


@dataclass(frozen=True)
class Usage:
    memory_mb: int
    cpu_cores: float
    disk_mb: int


# --- loading and authorizing ----------------------------------------------------------------


async def get_server(session: AsyncSession, server_id: str, *, for_update: bool = False) -> Server:
    statement = select(Server).where(Server.id == server_id)
    if for_update:
        statement = statement.with_for_update()
    server = await session.scalar(statement)
    if server is None:
        raise ServerNotFound(server_id)
    return server


async def authorize_any(
    session: AsyncSession, principal: Principal, permissions: Iterable[str], server: Server
) -> None:
    """Pass when any of ``permissions`` is allowed on ``server``.

    A caller with no access at all to the server gets the same 404 as for a
    made-up id; one who can see it but lacks the permission gets 403 naming
    the first.
    """
    await access.authorize_any(
        session,
        principal,
        permissions,
        server,
        resource_type="server",
        not_found=lambda: ServerNotFound(server.id),
    )


async def load_for(
    session: AsyncSession,
    principal: Principal,
    server_id: str,
    permissions: Iterable[str],
    *,
    for_update: bool = False,
) -> Server:
    """The server, if the caller may do one of ``permissions`` on it.

    404 for an unknown id and for a server the caller cannot see; 403 when the
    caller can see it but may do none of ``permissions``.
    """
    server = await get_server(session, server_id, for_update=for_update)
    await authorize_any(session, principal, permissions, server)
    return server


def _visible_to(statement: Select[Server], principal: Principal) -> Select[Server]:
    if principal.has("server.read"):
        return statement
    if principal.user_id is None:
        return statement.where(Server.id.is_(None))
    granted = access.granted_resource_ids(resource_type="server", user_id=principal.user_id)
    return statement.where(or_(Server.owner_id == principal.user_id, Server.id.in_(granted)))


def visible_server_ids(principal: Principal) -> Select[tuple[str]]:
    """The ids of the servers ``principal`` may read, as a subquery for other domains' lists."""
    statement: Select[tuple[str]] = select(Server.id)
    if principal.has("server.read"):
        return statement
    if principal.user_id is None:
        return statement.where(Server.id.is_(None))
    granted = access.granted_resource_ids(resource_type="server", user_id=principal.user_id)
    return statement.where(or_(Server.owner_id == principal.user_id, Server.id.in_(granted)))


async def list_servers(
    session: AsyncSession,
    principal: Principal,
    params: PageParams,
    *,
    node_id: str | None = None,
    status: str | None = None,
    owner_id: str | None = None,
) -> tuple[Sequence[Server], PageMeta]:
    """Servers the caller can see: all of the tenant's with a global ``server.read``, else
    the ones they own or hold a grant on."""
    if not principal.within_scopes("server.read"):
        raise access.AccessDenied("server.read")
    statement = _visible_to(select(Server), principal)
    if node_id is not None:
        statement = statement.where(Server.node_id == node_id)
    if status is not None:
        statement = statement.where(Server.status == status)
    if owner_id is not None:
        statement = statement.where(Server.owner_id == owner_id)
    return await paginate(session, statement.order_by(Server.id.desc()), params)


async def summaries_by_node(
    session: AsyncSession, node_ids: Sequence[str]
) -> dict[str, list[Server]]:
    """The servers placed on each node (for node listings)."""
    found: dict[str, list[Server]] = {node_id: [] for node_id in node_ids}
    if not node_ids:
        return found
    rows = await session.scalars(
        select(Server).where(Server.node_id.in_(node_ids)).order_by(Server.name, Server.id)
    )
    for server in rows:
        found[server.node_id].append(server)
    return found


async def ensure_node_empty(session: AsyncSession, node_id: str) -> None:
    """400 while servers are placed on the node (Catalyst's documented refusal)."""
    count = await session.scalar(select(func.count()).where(Server.node_id == node_id))
    if count:
        raise ValidationFailed("Cannot delete node with active servers", details={"servers": count})


async def ensure_template_unused(session: AsyncSession, template_id: str) -> None:
    count = await session.scalar(select(func.count()).where(Server.template_id == template_id))
    if count:
        raise Conflict("Template is used by servers", details={"servers": count})


# --- capacity ---------------------------------------------------------------------------------


async def node_usage(session: AsyncSession, node_id: str, *, excluding: str | None = None) -> Usage:
    statement = select(
        func.coalesce(func.sum(Server.allocated_memory_mb), 0),
        func.coalesce(func.sum(Server.allocated_cpu_cores), 0.0),
        func.coalesce(func.sum(Server.allocated_disk_mb), 0),
    ).where(Server.node_id == node_id)
    if excluding is not None:
        statement = statement.where(Server.id != excluding)
    memory, cpu, disk = (await session.execute(statement)).one()
    return Usage(memory_mb=int(memory), cpu_cores=float(cpu), disk_mb=int(disk))


async def check_capacity(
    session: AsyncSession,
    node: Node,
    *,
    memory_mb: int,
    cpu_cores: float,
    disk_mb: int,
    excluding: str | None = None,
) -> None:
    """400 unless the node (whose row the caller has locked) fits the request.

    A resource's limit is its maximum plus the node's overallocation percentage
    for it (Pterodactyl's meaning); -1 means that resource is not limited.
    """
    used = await node_usage(session, node.id, excluding=excluding)
    shortfalls: dict[str, dict[str, float]] = {}
    for name, requested, maximum, overallocate, taken in (
        ("memoryMb", memory_mb, node.max_memory_mb, node.memory_overallocate, used.memory_mb),
        ("cpuCores", cpu_cores, node.max_cpu_cores, node.cpu_overallocate, used.cpu_cores),
        ("diskMb", disk_mb, node.max_disk_mb, node.disk_overallocate, used.disk_mb),
    ):
        if overallocate < 0:
            continue
        available = maximum * (100 + overallocate) / 100 - taken
        if requested > available + 1e-9:
            shortfalls[name] = {"requested": requested, "available": max(available, 0)}
    if shortfalls:
        raise InsufficientResources(shortfalls)


# --- ports ------------------------------------------------------------------------------------


async def used_host_ports(session: AsyncSession, node_id: str) -> set[int]:
    rows = await session.scalars(
        select(ServerAllocation.host_port).where(ServerAllocation.node_id == node_id)
    )
    return set(rows.all())


def check_in_pool(node: Node, host_port: int) -> None:
    if not node.port_range_start <= host_port <= node.port_range_end:
        raise ValidationFailed(
            f"Port {host_port} is outside the node's pool "
            f"({node.port_range_start}-{node.port_range_end})",
            details={"hostPort": host_port},
        )


def free_port(node: Node, used: set[int]) -> int:
    for port in range(node.port_range_start, node.port_range_end + 1):
        if port not in used:
            return port
    raise Conflict("The node has no free ports left", code="NO_FREE_PORTS")


async def allocations_of(session: AsyncSession, server_id: str) -> Sequence[ServerAllocation]:
    rows = await session.scalars(
        select(ServerAllocation)
        .where(ServerAllocation.server_id == server_id)
        .order_by(ServerAllocation.is_primary.desc(), ServerAllocation.container_port)
    )
    return rows.all()


# --- rendering and commands -------------------------------------------------------------------


async def _bindings(session: AsyncSession, server: Server) -> dict[int, int]:
    return {a.container_port: a.host_port for a in await allocations_of(session, server.id)}


def _status_webhook(previous: str, status: str) -> str | None:
    if status == "crashed":
        return "server.crashed"
    # An install ends stopped (ready to start).
    return "server.installed" if previous == "installing" and status == "stopped" else None


def set_status(
    session: AsyncSession, server: Server, status: str, *, reason: str | None = None
) -> None:
    previous = server.status
    if previous == status:
        return
    server.status = status
    server.status_changed_at = utcnow()
    server.status_reason = reason[:500] if reason else None
    if (webhook_event := _status_webhook(previous, status)) is not None:
        emit(session, webhook_event, webhook_data(server), server.tenant_id)
    record_event(
        session,
        Event(
            "server.state_changed",
            {"serverId": server.id, "state": status, "previous": previous, "message": reason},
            tenant_id=server.tenant_id,
        ),
        topic=f"server.{server.id}.state",
    )


# --- create, update, delete -------------------------------------------------------------------


def webhook_data(server: Server) -> dict[str, Any]:
    """The ``data`` of a server's webhook events (SkyPANEL's example shape, and more)."""
    return {
        "id": server.id,
        "name": server.name,
        "status": server.status,
        "nodeId": server.node_id,
        "ownerId": server.owner_id,
    }


def _validate_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValidationFailed(
            "Server names use letters, digits, spaces, dots, dashes and underscores"
        )


async def create_server(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    template_id: str,
    node_id: str,
    allocated_memory_mb: int,
    allocated_cpu_cores: float,
    allocated_disk_mb: int,
    description: str | None = None,
    owner_id: str | None = None,
    primary_port: int | None = None,
    port_bindings: Mapping[int, int] | None = None,
    network_mode: str = "bridge",
    environment: Mapping[str, str] | None = None,
    restart_policy: RestartPolicy = "on-failure",
    max_crash_count: int = 5,
    database_limit: int = 0,
) -> Server:
    """Place a new server on a node (status ``stopped``; install it next).

    404 for an unknown template or node, 400 for missing template variables,
    400 when the node lacks memory, CPU or disk, 409 for a taken host port.
    """
    _validate_name(name)
    template = await templates.get_template(session, template_id)
    node = await nodes.get_node(session, node_id, for_update=True)
    owner = owner_id or principal.user_id
    if owner is None:
        raise ValidationFailed("ownerId is required when the caller is not a user")
    if owner != principal.user_id:
        await users.get_user(session, owner)

    bindings: dict[int, int] = dict(port_bindings or {})
    used = await used_host_ports(session, node.id)
    if not bindings:
        host = primary_port if primary_port is not None else free_port(node, used)
        bindings = {host: host}
    if primary_port is None:
        primary_port = next(iter(bindings))
    if primary_port not in bindings:
        raise ValidationFailed("primaryPort must be one of the portBindings' container ports")
    for host in bindings.values():
        check_in_pool(node, host)
        if host in used:
            raise Conflict(
                f"Port {host} is already allocated on this node", details={"hostPort": host}
            )
    if len(set(bindings.values())) != len(bindings):
        raise ValidationFailed("Two port bindings use the same host port")

    server_uuid = str(uuid.uuid4())
    server = Server(
        uuid=server_uuid,
        container_name=f"hostplane-{server_uuid[:8]}",
        name=name,
        description=description,
        owner_id=owner,
        node_id=node.id,
        template_id=template.id,
        status="stopped",
        allocated_memory_mb=allocated_memory_mb,
        allocated_cpu_cores=allocated_cpu_cores,
        allocated_disk_mb=allocated_disk_mb,
        primary_port=primary_port,
        network_mode=network_mode,
        environment=apply_changes(
            template, {}, environment or {}, operator=principal.has("server.update")
        ),
        restart_policy=restart_policy,
        max_crash_count=max_crash_count,
        database_limit=database_limit,
        recent_crashes=[],
    )
    # Variables first (the caller can fix them), then capacity.
    templates.render(template, variables_for(server, node, bindings, server.environment))
    await check_capacity(
        session,
        node,
        memory_mb=allocated_memory_mb,
        cpu_cores=allocated_cpu_cores,
        disk_mb=allocated_disk_mb,
    )
    session.add(server)
    await session.flush()
    for container, host in bindings.items():
        session.add(
            ServerAllocation(
                server_id=server.id,
                node_id=node.id,
                container_port=container,
                host_port=host,
                is_primary=container == primary_port,
            )
        )
    await session.flush()
    record_event(
        session,
        Event(
            "server.created", {"serverId": server.id, "nodeId": node.id}, tenant_id=server.tenant_id
        ),
    )
    emit(session, "server.created", webhook_data(server), server.tenant_id)
    return server


async def update_server(
    session: AsyncSession, principal: Principal, server_id: str, changes: Mapping[str, Any]
) -> Server:
    """Change a server. Resources (memory, CPU, disk) and the owner are an operator's
    (global ``server.update``) and need a stopped server; owners rename and set the
    variables their template lets them (``variables.apply_changes``)."""
    server = await load_for(session, principal, server_id, ("server.update",))
    lifecycle.ensure_not_suspended(server.status)
    resources = {k: v for k, v in changes.items() if k in RESOURCE_FIELDS and v is not None}
    operator_only = resources or "owner_id" in changes or changes.get("database_limit") is not None
    if operator_only and not principal.has("server.update"):
        raise Forbidden(
            "Changing a server's resources, owner or database limit is for operators",
            details={"permission": "server.update"},
        )
    # Variables are checked before anything changes: a refusal leaves the server as it was.
    template = await templates.get_template(session, server.template_id)
    environment = None
    if changes.get("environment") is not None:
        environment = apply_changes(
            template,
            server.environment or {},
            {k: str(v) for k, v in changes["environment"].items()},
            operator=principal.has("server.update"),
        )
    if "name" in changes and changes["name"] is not None:
        _validate_name(changes["name"])
        server.name = changes["name"]
    if "description" in changes:
        server.description = changes["description"]
    if changes.get("database_limit") is not None:
        server.database_limit = changes["database_limit"]
    if changes.get("owner_id") is not None:
        await users.get_user(session, changes["owner_id"])
        server.owner_id = changes["owner_id"]
    if resources:
        lifecycle.ensure_off(server.status, action="change its resources")
        node = await nodes.get_node(session, server.node_id, for_update=True)
        wanted = {field: resources.get(field, getattr(server, field)) for field in RESOURCE_FIELDS}
        await check_capacity(
            session,
            node,
            memory_mb=wanted["allocated_memory_mb"],
            cpu_cores=wanted["allocated_cpu_cores"],
            disk_mb=wanted["allocated_disk_mb"],
            excluding=server.id,
        )
        for field, value in wanted.items():
            setattr(server, field, value)
    if environment is not None:
        node = await nodes.get_node(session, server.node_id)
        templates.render(
            template, variables_for(server, node, await _bindings(session, server), environment)
        )
        server.environment = environment
    await session.flush()
    emit(session, "server.updated", webhook_data(server), server.tenant_id)
    return server


CommandKind = Literal[
    "install_server",
    "start_server",
    "stop_server",
    "restart_server",
    "kill_server",
    "delete_server",
    "execute_command",
]


@dataclass(frozen=True)
class PlannedCommand:
    """What the agent must be told after the decision commits.

    ``previous`` is the status before the decision and ``target`` the
    transitional status it set (``None`` when it set none): a refusal puts
    ``previous`` back, but only while the server is still in ``target``.
    """

    server: Server
    kind: CommandKind
    previous: str
    target: str | None = None
    stop_timeout: int | None = None
    text: str | None = None


async def delete_server(
    session: AsyncSession, principal: Principal, server_id: str, *, force: bool = False
) -> PendingServerDelete:
    """Delete a stopped server, its ports, grants and logs; the agent removes its files.

    Suspended servers answer 423 except to operators (global ``server.delete``),
    who remove them without unsuspending first. The removal on the node is
    remembered (:class:`PendingServerDelete`) in the same transaction, so it
    happens even when the node is offline now: it is sent when the agent
    reconnects. ``force`` (operators) deletes a server in any state: the agent kills it.
    """
    server = await load_for(session, principal, server_id, ("server.delete",), for_update=True)
    if server.status == "suspended" and not principal.has("server.delete"):
        lifecycle.ensure_not_suspended(server.status)
    if server.status != "suspended" and not force:
        lifecycle.ensure_off(server.status, action="delete it", allowed=lifecycle.DELETABLE)
    for grant in await access.grants_on(session, resource_type="server", resource_id=server.id):
        await session.delete(grant)
    node = await nodes.get_node(session, server.node_id)
    pending = PendingServerDelete(
        node_id=node.id,
        server_id=server.id,
        server_uuid=server.uuid,
        tenant_id=server.tenant_id,
    )
    session.add(pending)
    await session.execute(delete(ServerAllocation).where(ServerAllocation.server_id == server.id))
    # Its databases are dropped on their hosts by a job, retried while a host is away.
    await jobs.enqueue(
        session, "databases.drop_server", tenant_id=server.tenant_id, server_id=server.id
    )
    await session.delete(server)
    await session.flush()
    record_event(
        session, Event("server.deleted", {"serverId": server_id}, tenant_id=server.tenant_id)
    )
    emit(session, "server.deleted", {**webhook_data(server), "status": "deleted"}, server.tenant_id)
    return pending


# --- suspension -------------------------------------------------------------------------------


async def suspend_server(
    session: AsyncSession, principal: Principal, server_id: str, *, reason: str | None = None
) -> tuple[Server, PlannedCommand | None]:
    """Suspend (global ``server.suspend``): stops the server if it runs; 409 if already.

    The stop is best effort: a node that is offline now stops the server when
    its agent reconnects (a suspended server reported running gets a stop).
    """
    server = await load_for(session, principal, server_id, ("server.suspend",), for_update=True)
    if server.status == "suspended":
        raise Conflict("Server is already suspended", details={"status": server.status})
    lifecycle.check_transition(server.status, "suspended", action="suspend")
    node = await nodes.get_node(session, server.node_id)
    was_live = server.status not in OFF
    previous = server.status
    server.suspended_at = utcnow()
    server.suspended_by_user_id = principal.user_id
    server.suspension_reason = reason
    set_status(session, server, "suspended", reason=reason)
    await session.flush()
    if was_live and nodes.is_online(node):
        return server, PlannedCommand(server, "stop_server", previous=previous)
    return server, None


async def unsuspend_server(session: AsyncSession, principal: Principal, server_id: str) -> Server:
    server = await load_for(session, principal, server_id, ("server.suspend",), for_update=True)
    if server.status != "suspended":
        raise Conflict("Server is not suspended", details={"status": server.status})
    server.suspended_at = None
    server.suspended_by_user_id = None
    server.suspension_reason = None
    set_status(session, server, "stopped")
    await session.flush()
    return server


# --- lifecycle actions ------------------------------------------------------------------------


async def install_server(
    session: AsyncSession, principal: Principal, server_id: str
) -> PlannedCommand:
    """Move to ``installing``; the agent reports ``stopped`` when it is ready, or
    ``install_failed`` with the reason (from which install may be retried)."""
    server = await load_for(session, principal, server_id, INSTALL_PERMISSIONS, for_update=True)
    lifecycle.check_transition(server.status, "installing", action="install")
    node = await nodes.get_node(session, server.node_id)
    nodes.ensure_online(node)
    previous = server.status
    set_status(session, server, "installing")
    await session.flush()
    return PlannedCommand(server, "install_server", previous=previous, target="installing")


async def power(
    session: AsyncSession,
    principal: Principal,
    server_id: str,
    action: PowerAction,
    *,
    stop_timeout: int | None = None,
) -> PlannedCommand:
    """Start, stop, restart or kill: every power route of every document lands here."""
    server = await load_for(
        session, principal, server_id, POWER_PERMISSIONS[action], for_update=True
    )
    lifecycle.ensure_not_suspended(server.status)
    current = server.status
    kind: CommandKind
    if action == "start":
        if current not in OFF:
            raise lifecycle.InvalidTransition(current, "starting", "start")
        target: str = lifecycle.check_transition(current, "starting", action="start")
        kind = "start_server"
    elif action == "stop":
        if current not in LIVE:
            raise lifecycle.InvalidTransition(current, "stopping", "stop")
        target = "stopping"
        kind = "stop_server"
    elif action == "restart":
        # A restart of something that is not running is a start.
        if current in LIVE:
            target, kind = "stopping", "restart_server"
        elif current in OFF:
            target, kind = "starting", "start_server"
        else:
            raise lifecycle.InvalidTransition(current, "starting", "restart")
    else:
        if current not in ("starting", "running", "stopping"):
            raise lifecycle.InvalidTransition(current, "stopped", "kill")
        target = "stopping"
        kind = "kill_server"
    node = await nodes.get_node(session, server.node_id)
    nodes.ensure_online(node)
    if kind == "start_server":
        # Someone started it by hand: the crash-loop window starts over.
        server.recent_crashes = []
    set_status(session, server, target)
    await session.flush()
    return PlannedCommand(
        server,
        kind,
        previous=current,
        target=target,
        stop_timeout=stop_timeout if kind == "stop_server" else None,
    )


async def send_command(
    session: AsyncSession, principal: Principal, server_id: str, command: str
) -> PlannedCommand:
    """A line for the server's stdin (``execute_command``); 409 unless it runs."""
    server = await load_for(session, principal, server_id, COMMAND_PERMISSIONS)
    lifecycle.ensure_not_suspended(server.status)
    if server.status not in LIVE:
        raise Conflict(
            f"Server is not running (it is {server.status})", details={"status": server.status}
        )
    node = await nodes.get_node(session, server.node_id)
    nodes.ensure_online(node)
    return PlannedCommand(server, "execute_command", previous=server.status, text=command)


async def reset_crash_count(session: AsyncSession, principal: Principal, server_id: str) -> Server:
    server = await load_for(session, principal, server_id, ("server.update",), for_update=True)
    lifecycle.ensure_not_suspended(server.status)
    server.crash_count = 0
    server.recent_crashes = []
    await session.flush()
    return server


async def set_restart_policy(
    session: AsyncSession,
    principal: Principal,
    server_id: str,
    *,
    restart_policy: RestartPolicy | None,
    max_crash_count: int | None,
) -> Server:
    server = await load_for(session, principal, server_id, ("server.update",), for_update=True)
    lifecycle.ensure_not_suspended(server.status)
    if restart_policy is not None:
        server.restart_policy = restart_policy
    if max_crash_count is not None:
        server.max_crash_count = max_crash_count
    await session.flush()
    return server


# --- what the agent reports (state reports: :mod:`hostplane.infra.servers.reports`) -------


async def record_stats(session: AsyncSession, server_id: str, stats: Mapping[str, Any]) -> None:
    """Keep the latest ``resource_stats`` of a server (``GET .../resources`` reads them)."""
    server = await session.get(Server, server_id)
    if server is None:
        return
    server.cpu_usage = _number(stats.get("cpu"), float)
    server.memory_usage_mb = _number(stats.get("memoryMb"), int)
    server.disk_usage_mb = _number(stats.get("diskUsageMb"), int)
    server.network_sent = _number(stats.get("networkSent"), int)
    server.network_received = _number(stats.get("networkReceived"), int)
    server.stats_at = utcnow()
    await session.flush()


async def servers_with_stats(session: AsyncSession) -> Sequence[Server]:
    """Every server that has reported stats, with its latest sample (the alert evaluator)."""
    return (
        await session.scalars(
            select(Server).where(Server.stats_at.is_not(None)).order_by(Server.id)
        )
    ).all()


async def servers_by_id(session: AsyncSession, server_ids: Iterable[str]) -> dict[str, Server]:
    ids = set(server_ids)
    if not ids:
        return {}
    rows = await session.scalars(select(Server).where(Server.id.in_(ids)))
    return {server.id: server for server in rows.all()}


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return kind(value)


async def resources_of(session: AsyncSession, principal: Principal, server_id: str) -> Server:
    return await load_for(session, principal, server_id, ("server.read",))


async def node_and_template(session: AsyncSession, server: Server) -> tuple[Node, Template]:
    node = await nodes.get_node(session, server.node_id)
    template = await templates.get_template(session, server.template_id)
    return node, template
