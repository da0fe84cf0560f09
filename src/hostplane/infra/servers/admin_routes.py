"""``/api/admin/servers``: Catalyst's fleet listing and QeinTech's forced suspend and delete.

The same services as ``/api/servers`` serve them; what differs is the shape
of the listing (owner and node named) and that the admin delete skips the
"must be stopped" rule.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import Field

from hostplane.core.http.deps import PageDep, RuntimeDep, SessionDep, require
from hostplane.core.http.envelope import Envelope, PageEnvelope, ok, page
from hostplane.core.principal import Principal
from hostplane.core.schemas import ApiModel
from hostplane.identity.users import service as users
from hostplane.infra.nodes import service as nodes
from hostplane.infra.servers import commands, service, terms
from hostplane.infra.servers.router import Status, _context, _term_fields, deletion_result
from hostplane.infra.servers.schemas import ActionResult, ServerOut, SuspendBody, SuspensionOut

router = APIRouter(prefix="/api/admin/servers", tags=["servers"])

FleetReader = Annotated[Principal, Depends(require("server.read"))]
Suspender = Annotated[Principal, Depends(require("server.suspend"))]
Deleter = Annotated[Principal, Depends(require("server.delete"))]


class OwnerRef(ApiModel):
    id: str
    username: str


class NodeName(ApiModel):
    id: str
    name: str


class AdminServer(ServerOut):
    """Catalyst's admin listing: ``owner`` and ``node`` by name, beside the server's fields."""

    owner: OwnerRef | None = Field(description="Null once the owner's account is gone.")
    node: NodeName


@router.get("", response_model=PageEnvelope[AdminServer])
async def admin_list_servers(
    session: SessionDep,
    principal: FleetReader,
    params: PageDep,
    node_id: Annotated[str | None, Query(alias="nodeId", max_length=64)] = None,
    owner_id: Annotated[str | None, Query(alias="ownerId", max_length=64)] = None,
    status: Annotated[Status | None, Query()] = None,
) -> PageEnvelope[AdminServer]:
    """Every server of the tenant, newest first, with owner, node, status, allocated memory
    and the CPU its agent last reported; filters ``nodeId``, ``ownerId``, ``status``."""
    found, meta = await service.list_servers(
        session, principal, params, node_id=node_id, status=status, owner_id=owner_id
    )
    # A page names a handful of nodes and owners: one lookup each, shared by their servers.
    node_rows = {
        node_id: await nodes.get_node(session, node_id) for node_id in {s.node_id for s in found}
    }
    owners = {
        owner_id: await users.get_user(session, owner_id)
        for owner_id in {s.owner_id for s in found if s.owner_id is not None}
    }
    found_terms = await terms.terms_of(session, [s.id for s in found])
    items = []
    for server in found:
        node = node_rows[server.node_id]
        owner = owners.get(server.owner_id) if server.owner_id else None
        items.append(
            AdminServer.model_validate(
                {
                    **ServerOut.model_validate(server).model_dump(by_alias=False),
                    "ip_address": node.public_address,
                    "owner": OwnerRef(id=owner.id, username=owner.username) if owner else None,
                    "node": NodeName(id=node.id, name=node.name),
                    **_term_fields(found_terms.get(server.id)),
                }
            )
        )
    return page(items, meta)


@router.post("/{server_id}/suspend", response_model=Envelope[SuspensionOut])
async def admin_suspend_server(
    server_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: Suspender,
    body: SuspendBody | None = None,
) -> Envelope[SuspensionOut]:
    """Force suspend: a running server is stopped (when its node is offline, as soon as its
    agent reconnects); 409 if it already is suspended."""
    server = await commands.suspend(
        runtime, _context(request, principal), server_id, reason=body.reason if body else None
    )
    return ok(SuspensionOut.model_validate(server))


@router.delete("/{server_id}", response_model=Envelope[ActionResult])
async def admin_delete_server(
    server_id: str,
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    principal: Deleter,
) -> Envelope[ActionResult]:
    """Force delete, in any state: the agent kills the server and removes its files. 200
    once the node confirmed; 202 when the node is offline (or did not answer): the removal
    is remembered and carried out when its agent reconnects."""
    removed = await commands.delete(runtime, _context(request, principal), server_id, force=True)
    return deletion_result(server_id, removed, response)
