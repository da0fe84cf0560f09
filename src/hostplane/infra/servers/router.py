"""``/api/servers``: Catalyst's server routes, QeinTech's power/command/resources/network
and SkyPANEL's power, all served by one server service."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.bounds import sequence_or_moment
from hostplane.core.context import RequestContext
from hostplane.core.http.deps import (
    Authenticated,
    PageDep,
    RuntimeDep,
    SessionDep,
    client_ip,
    require,
)
from hostplane.core.http.envelope import Empty, Envelope, PageEnvelope, ok, page
from hostplane.core.http.middleware import route_template
from hostplane.core.principal import Principal
from hostplane.infra.nodes import service as nodes
from hostplane.infra.servers import (
    allocations,
    commands,
    logs,
    service,
    subusers,
    terms,
    variables,
)
from hostplane.infra.servers.models import Server, ServerAllocation
from hostplane.infra.servers.schemas import (
    ActionResult,
    AllocationCreate,
    AllocationOut,
    CommandBody,
    LogLine,
    NetworkAllocationOut,
    NodeRef,
    PowerBody,
    PrimaryBody,
    PrimaryOut,
    ResourcesOut,
    RestartPolicyBody,
    RestartPolicyOut,
    ServerCreate,
    ServerDetail,
    ServerOut,
    ServerUpdate,
    StopBody,
    SubuserCreate,
    SubuserOut,
    SubuserUpdate,
    SuspendBody,
    SuspensionOut,
    TemplateRef,
)
from hostplane.platform.admin import live as live_config

router = APIRouter(prefix="/api/servers", tags=["servers"])

ServerCreator = Annotated[Principal, Depends(require("server.create"))]
Status = Literal[
    "stopped",
    "installing",
    "install_failed",
    "starting",
    "running",
    "stopping",
    "crashed",
    "transferring",
    "suspended",
]

_MESSAGES = {
    "start": "Server start initiated",
    "stop": "Server stop initiated",
    "restart": "Server restart initiated",
    "kill": "Server killed",
}


async def _detail(session: AsyncSession, principal: Principal, server: Server) -> ServerDetail:
    """The server as ``principal`` may see it: the startup command and variables only
    with ``server.details`` (hidden variables only for operators)."""
    node, template = await service.node_and_template(session, server)
    fields = {f: getattr(server, f) for f in ServerDetail.model_fields if hasattr(server, f)}
    details, operator = await variables.details_access(session, principal, server)
    environment = server.environment or {}
    fields |= {
        "node": NodeRef.model_validate(node),
        "template": TemplateRef.model_validate(template),
        "ip_address": node.public_address,
        "environment": (
            variables.visible_environment(template, environment, operator=operator)
            if details
            else None
        ),
        "startup_command": template.start_command if details else None,
        "variables": (
            variables.visible_variables(template, environment, operator=operator)
            if details
            else None
        ),
    }
    term = (await terms.terms_of(session, [server.id])).get(server.id)
    return ServerDetail.model_validate(fields | _term_fields(term))


def _term_fields(term: terms.ServerTerm | None) -> dict[str, Any]:
    if term is None:
        return {}
    return {"plan": term.plan_name, "plan_id": term.plan_id, "expires_at": term.expires_at}


def _result(server: Server, message: str) -> Envelope[ActionResult]:
    return ok(ActionResult(message=message, server_id=server.id, status=server.status))


def _context(request: Request, principal: Principal) -> RequestContext:
    """Commands commit their decision before asking the agent, in a unit of
    work of their own (see :mod:`hostplane.infra.servers.commands`)."""
    return RequestContext(
        principal=principal,
        request_id=getattr(request.state, "request_id", None),
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        method=request.method,
        route=route_template(request.scope),
        path_params=dict(request.path_params),
    )


@router.get("", response_model=PageEnvelope[ServerOut])
async def list_servers(
    session: SessionDep,
    principal: Authenticated,
    params: PageDep,
    node_id: Annotated[str | None, Query(alias="nodeId")] = None,
    status: Annotated[Status | None, Query()] = None,
) -> PageEnvelope[ServerOut]:
    """Servers the caller may see: operators every server of the tenant, others their own
    and those shared with them."""
    found, meta = await service.list_servers(
        session, principal, params, node_id=node_id, status=status
    )
    # A page names a handful of nodes: one lookup for all, shared by their servers.
    addresses = await nodes.public_addresses(session, {s.node_id for s in found})
    found_terms = await terms.terms_of(session, [s.id for s in found])
    return page(
        [
            ServerOut.model_validate(s).model_copy(
                update={"ip_address": addresses[s.node_id]} | _term_fields(found_terms.get(s.id))
            )
            for s in found
        ],
        meta,
    )


@router.post("", response_model=Envelope[ServerDetail], status_code=201)
async def create_server(
    body: ServerCreate, session: SessionDep, runtime: RuntimeDep, principal: ServerCreator
) -> Envelope[ServerDetail]:
    """Place a server on a node (status ``stopped``); resources left out are the runtime
    configuration's ``defaultLimits``. 400 for missing template variables or a node
    without room, 404 for an unknown template or node, 409 for a taken port."""
    values = body.model_dump(by_alias=False, exclude={"location_id"})
    limits = live_config.current(runtime).default_limits
    for name, default in (
        ("allocated_memory_mb", limits.memory_mb),
        ("allocated_cpu_cores", limits.cpu_cores),
        ("allocated_disk_mb", limits.disk_mb),
    ):
        if values[name] is None:
            values[name] = default
    server = await service.create_server(session, principal, **values)
    return ok(await _detail(session, principal, server))


@router.get("/{server_id}", response_model=Envelope[ServerDetail])
async def get_server(
    server_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[ServerDetail]:
    """One server with its node, template and crash counters; its startup command and
    variables only for callers allowed ``server.details``."""
    server = await service.load_for(session, principal, server_id, ("server.read",))
    return ok(await _detail(session, principal, server))


@router.put("/{server_id}", response_model=Envelope[ServerDetail])
async def update_server(
    server_id: str, body: ServerUpdate, session: SessionDep, principal: Authenticated
) -> Envelope[ServerDetail]:
    """Rename, describe or set variables; operators change resources (stopped only, 409)."""
    server = await service.update_server(
        session, principal, server_id, body.model_dump(by_alias=False, exclude_unset=True)
    )
    return ok(await _detail(session, principal, server))


@router.delete("/{server_id}", response_model=Envelope[ActionResult])
async def delete_server(
    server_id: str,
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    principal: Authenticated,
) -> Envelope[ActionResult]:
    """Delete a stopped server (409 while it runs). 200 once its node removed its
    files and container; 202 when the node is offline (or did not confirm): the
    removal is remembered and carried out when its agent reconnects."""
    removed = await commands.delete(runtime, _context(request, principal), server_id)
    return deletion_result(server_id, removed, response)


@router.post("/{server_id}/suspend", response_model=Envelope[SuspensionOut])
async def suspend_server(
    server_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
    body: SuspendBody | None = None,
) -> Envelope[SuspensionOut]:
    """Suspend a server (``server.suspend``); 409 if it already is."""
    server = await commands.suspend(
        runtime, _context(request, principal), server_id, reason=body.reason if body else None
    )
    return ok(SuspensionOut.model_validate(server))


@router.post("/{server_id}/unsuspend", response_model=Envelope[SuspensionOut])
async def unsuspend_server(
    server_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[SuspensionOut]:
    """Lift a suspension; the server returns to ``stopped``. 409 if it is not suspended."""
    server = await service.unsuspend_server(session, principal, server_id)
    return ok(SuspensionOut.model_validate(server))


@router.post("/{server_id}/install", response_model=Envelope[ActionResult])
async def install_server(
    server_id: str, request: Request, runtime: RuntimeDep, principal: Authenticated
) -> Envelope[ActionResult]:
    """Send ``install_server`` to the node's agent once it is ``installing``; the
    agent has accepted it when this answers (409/503 and the status back if not)."""
    server = await commands.install(runtime, _context(request, principal), server_id)
    return _result(server, "Installation started")


@router.post("/{server_id}/start", response_model=Envelope[ActionResult])
async def start_server(
    server_id: str, request: Request, runtime: RuntimeDep, principal: Authenticated
) -> Envelope[ActionResult]:
    """Start a stopped or crashed server (409 with the agent's reason if it refuses)."""
    server = await commands.power(runtime, _context(request, principal), server_id, "start")
    return _result(server, _MESSAGES["start"])


@router.post("/{server_id}/stop", response_model=Envelope[ActionResult])
async def stop_server(
    server_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
    body: StopBody | None = None,
) -> Envelope[ActionResult]:
    """Stop a running server gracefully (optional ``timeout`` in seconds before a kill)."""
    timeout = body.timeout if body else None
    server = await commands.power(
        runtime, _context(request, principal), server_id, "stop", stop_timeout=timeout
    )
    return _result(server, _MESSAGES["stop"])


@router.post("/{server_id}/restart", response_model=Envelope[ActionResult])
async def restart_server(
    server_id: str, request: Request, runtime: RuntimeDep, principal: Authenticated
) -> Envelope[ActionResult]:
    """Restart a server (starts it when it is stopped)."""
    server = await commands.power(runtime, _context(request, principal), server_id, "restart")
    return _result(server, _MESSAGES["restart"])


@router.post("/{server_id}/kill", response_model=Envelope[ActionResult])
async def kill_server(
    server_id: str, request: Request, runtime: RuntimeDep, principal: Authenticated
) -> Envelope[ActionResult]:
    """Force-stop a server (SIGKILL), without a graceful shutdown."""
    server = await commands.power(runtime, _context(request, principal), server_id, "kill")
    return _result(server, _MESSAGES["kill"])


@router.post("/{server_id}/power", response_model=Envelope[ActionResult])
async def power(
    server_id: str,
    body: PowerBody,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
) -> Envelope[ActionResult]:
    """QeinTech ``{signal: start|stop|restart|kill}`` or SkyPANEL ``{action:
    start|stop|restart|shutdown}`` (``shutdown`` is a graceful stop)."""
    action = body.power_action
    server = await commands.power(
        runtime, _context(request, principal), server_id, action, stop_timeout=body.timeout
    )
    return _result(server, _MESSAGES[action])


@router.post("/{server_id}/command", response_model=Envelope[ActionResult])
async def send_command(
    server_id: str,
    body: CommandBody,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
) -> Envelope[ActionResult]:
    """Send a line to the server's console (409 unless it runs)."""
    server = await commands.console_command(
        runtime, _context(request, principal), server_id, body.command
    )
    return _result(server, "Command sent")


@router.post("/{server_id}/reset-crash-count", response_model=Envelope[ActionResult])
async def reset_crash_count(
    server_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[ActionResult]:
    """Set the crash counter back to zero (automatic restarts resume)."""
    server = await service.reset_crash_count(session, principal, server_id)
    return _result(server, "Crash count reset")


@router.patch("/{server_id}/restart-policy", response_model=Envelope[RestartPolicyOut])
async def restart_policy(
    server_id: str, body: RestartPolicyBody, session: SessionDep, principal: Authenticated
) -> Envelope[RestartPolicyOut]:
    """``always`` | ``on-failure`` | ``never`` and the crash count that stops restarts."""
    server = await service.set_restart_policy(
        session,
        principal,
        server_id,
        restart_policy=body.restart_policy,
        max_crash_count=body.max_crash_count,
    )
    return ok(RestartPolicyOut.model_validate(server))


@router.get("/{server_id}/resources", response_model=Envelope[ResourcesOut])
async def resources(
    server_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[ResourcesOut]:
    """The latest CPU, memory, disk and network figures the agent reported."""
    server = await service.resources_of(session, principal, server_id)
    return ok(
        ResourcesOut(
            server_id=server.id,
            status=server.status,
            cpu_usage=server.cpu_usage,
            memory_usage_mb=server.memory_usage_mb,
            memory_limit_mb=server.allocated_memory_mb,
            disk_usage_mb=server.disk_usage_mb,
            disk_limit_mb=server.allocated_disk_mb,
            network_sent=server.network_sent,
            network_received=server.network_received,
            updated_at=server.stats_at,
        )
    )


@router.get("/{server_id}/logs", response_model=Envelope[list[LogLine]])
async def server_logs(
    server_id: str,
    session: SessionDep,
    principal: Authenticated,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    stream: Annotated[Literal["stdout", "stderr", "system"] | None, Query()] = None,
    before: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Older lines only: an ISO 8601 timestamp (Catalyst) or a line's id",
        ),
    ] = None,
) -> Envelope[list[LogLine]]:
    """Console history, oldest first: the newest ``limit`` lines before ``before``."""
    older_than = None if before is None else sequence_or_moment(before, field="before")
    lines = await logs.list_logs(
        session, principal, server_id, limit=limit, stream=stream, before=older_than
    )
    return ok(
        [
            LogLine(
                id=x.seq,
                server_id=x.server_id,
                stream=x.stream,
                data=x.data,
                timestamp=x.created_at,
            )
            for x in lines
        ]
    )


# --- allocations -------------------------------------------------------------------------------


def _allocation(a: ServerAllocation) -> AllocationOut:
    return AllocationOut.model_validate(a)


@router.get("/{server_id}/allocations", response_model=Envelope[list[AllocationOut]])
async def list_allocations(
    server_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[list[AllocationOut]]:
    """The server's port bindings, primary first."""
    _server, found = await allocations.list_allocations(session, principal, server_id)
    return ok([_allocation(a) for a in found])


@router.post("/{server_id}/allocations", response_model=Envelope[AllocationOut])
async def add_allocation(
    server_id: str, body: AllocationCreate, session: SessionDep, principal: Authenticated
) -> Envelope[AllocationOut]:
    """Bind a host port of the node's pool (server stopped; 409 if the port is taken)."""
    allocation = await allocations.add_allocation(
        session, principal, server_id, container_port=body.container_port, host_port=body.host_port
    )
    return ok(_allocation(allocation))


@router.post("/{server_id}/allocations/primary", response_model=Envelope[PrimaryOut])
async def set_primary_allocation(
    server_id: str, body: PrimaryBody, session: SessionDep, principal: Authenticated
) -> Envelope[PrimaryOut]:
    """Make a binding the primary one (server stopped)."""
    server = await allocations.set_primary(session, principal, server_id, body.container_port)
    return ok(PrimaryOut(primary_port=server.primary_port))


@router.delete("/{server_id}/allocations/{container_port}", response_model=Empty)
async def remove_allocation(
    server_id: str, container_port: int, session: SessionDep, principal: Authenticated
) -> Empty:
    """Remove a non-primary binding (server stopped)."""
    await allocations.remove_allocation(session, principal, server_id, container_port)
    return Empty()


@router.get("/{server_id}/network", response_model=Envelope[list[NetworkAllocationOut]])
async def network(
    server_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[list[NetworkAllocationOut]]:
    """QeinTech's view of the allocated ports, with the node's public address."""
    server, found = await allocations.list_allocations(session, principal, server_id)
    node, _template = await service.node_and_template(session, server)
    return ok(
        [
            NetworkAllocationOut(
                container_port=a.container_port,
                host_port=a.host_port,
                is_primary=a.is_primary,
                ip=node.public_address,
                port=a.host_port,
            )
            for a in found
        ]
    )


# --- subusers ----------------------------------------------------------------------------------


@router.get("/{server_id}/users", response_model=Envelope[list[SubuserOut]])
async def list_subusers(
    server_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[list[SubuserOut]]:
    """Users the server is shared with, and what each may do."""
    grants = await subusers.list_subusers(session, principal, server_id)
    return ok([SubuserOut.model_validate(g) for g in grants])


@router.post("/{server_id}/users", response_model=Envelope[SubuserOut], status_code=201)
async def add_subuser(
    server_id: str, body: SubuserCreate, session: SessionDep, principal: Authenticated
) -> Envelope[SubuserOut]:
    """Share the server with a user of the tenant, with server-level permissions."""
    grant = await subusers.set_subuser(
        session,
        principal,
        server_id,
        user_id=body.user_id,
        permissions=body.permissions,
        create=True,
    )
    return ok(SubuserOut.model_validate(grant))


@router.put("/{server_id}/users/{user_id}", response_model=Envelope[SubuserOut])
async def update_subuser(
    server_id: str, user_id: str, body: SubuserUpdate, session: SessionDep, principal: Authenticated
) -> Envelope[SubuserOut]:
    """Replace a subuser's permissions."""
    grant = await subusers.set_subuser(
        session, principal, server_id, user_id=user_id, permissions=body.permissions, create=False
    )
    return ok(SubuserOut.model_validate(grant))


@router.delete("/{server_id}/users/{user_id}", response_model=Empty)
async def remove_subuser(
    server_id: str, user_id: str, session: SessionDep, principal: Authenticated
) -> Empty:
    """Stop sharing the server with a user."""
    await subusers.remove_subuser(session, principal, server_id, user_id)
    return Empty()


def deletion_result(server_id: str, removed: bool, response: Response) -> Envelope[ActionResult]:
    """200 once the node removed the server; 202 while that removal waits for the node."""
    if not removed:
        response.status_code = 202
        return ok(
            ActionResult(
                message="Server deleted; its node removes the files when it is back online",
                server_id=server_id,
                status="deleted",
            )
        )
    return ok(
        ActionResult(message="Server deleted successfully", server_id=server_id, status="deleted")
    )
