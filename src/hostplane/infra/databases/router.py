"""``/api/servers/{server_id}/databases`` (Catalyst's four routes) and the admin's
``/api/admin/database-hosts``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from hostplane.core.http.deps import Authenticated, RuntimeDep, SessionDep, require
from hostplane.core.http.envelope import Envelope, ok
from hostplane.core.principal import Principal
from hostplane.infra.databases import jobs as _jobs  # noqa: F401 - registers the job handlers
from hostplane.infra.databases import service
from hostplane.infra.databases.models import DatabaseHost
from hostplane.infra.databases.schemas import (
    DatabaseCreate,
    DatabaseHostCreate,
    DatabaseHostOut,
    DatabaseHostUpdate,
    DatabaseOut,
)

router = APIRouter(prefix="/api/servers/{server_id}/databases", tags=["databases"])
admin_router = APIRouter(prefix="/api/admin/database-hosts", tags=["databases"])

HostReader = Annotated[Principal, Depends(require("database-host.read"))]
HostManager = Annotated[Principal, Depends(require("database-host.manage"))]


def _host_out(host: DatabaseHost, count: int) -> DatabaseHostOut:
    out = DatabaseHostOut.model_validate(host)
    out.database_count = count
    return out


@admin_router.get("", response_model=Envelope[list[DatabaseHostOut]])
async def list_hosts(
    session: SessionDep, _principal: HostReader
) -> Envelope[list[DatabaseHostOut]]:
    """Every database host with how many server databases it holds (no passwords)."""
    return ok([_host_out(h, n) for h, n in await service.list_hosts(session)])


@admin_router.post("", response_model=Envelope[DatabaseHostOut], status_code=201)
async def create_host(
    body: DatabaseHostCreate, session: SessionDep, runtime: RuntimeDep, _principal: HostManager
) -> Envelope[DatabaseHostOut]:
    """Add a host. The panel connects with the credentials first: 400 when the host
    refuses them, 503 when it cannot be reached, each with the driver's reason."""
    values = body.model_dump(by_alias=False)
    values["password"] = body.password.get_secret_value()
    host = await service.create_host(session, values, vault=service.Vault.of(runtime.settings))
    return ok(_host_out(host, 0))


@admin_router.get("/{host_id}", response_model=Envelope[DatabaseHostOut])
async def get_host(
    host_id: str, session: SessionDep, _principal: HostReader
) -> Envelope[DatabaseHostOut]:
    return ok(_host_out(*await service.host_with_count(session, host_id)))


@admin_router.put("/{host_id}", response_model=Envelope[DatabaseHostOut])
async def update_host(
    host_id: str,
    body: DatabaseHostUpdate,
    session: SessionDep,
    runtime: RuntimeDep,
    _principal: HostManager,
) -> Envelope[DatabaseHostOut]:
    """Change a host; new connection details are tried before they are saved (400/503)."""
    changes = body.model_dump(by_alias=False, exclude_unset=True)
    if body.password is not None:
        changes["password"] = body.password.get_secret_value()
    await service.update_host(session, host_id, changes, vault=service.Vault.of(runtime.settings))
    return ok(_host_out(*await service.host_with_count(session, host_id)))


@admin_router.delete("/{host_id}", response_model=Envelope[None])
async def delete_host(host_id: str, session: SessionDep, _principal: HostManager) -> Envelope[None]:
    """Remove a host (409 while it still holds server databases)."""
    await service.delete_host(session, host_id)
    return ok(None)


@router.get("", response_model=Envelope[list[DatabaseOut]])
async def list_databases(
    server_id: str, session: SessionDep, runtime: RuntimeDep, principal: Authenticated
) -> Envelope[list[DatabaseOut]]:
    """The server's databases with their credentials (``database.read`` or ownership)."""
    vault = service.Vault.of(runtime.settings)
    return ok(await service.list_databases(session, principal, server_id, vault=vault))


@router.post("", response_model=Envelope[DatabaseOut], status_code=201)
async def create_database(
    server_id: str,
    body: DatabaseCreate,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: Authenticated,
) -> Envelope[DatabaseOut]:
    """Create ``s{server}_{name}`` with its own user and a random password. 400 for a bad
    host or name, 409 when the name or user exists on the host or a limit is reached,
    503 when the host is unavailable (nothing is kept)."""
    created = await service.create_database(
        session,
        principal,
        server_id,
        host_id=body.host_id,
        name=body.name,
        vault=service.Vault.of(runtime.settings),
    )
    return ok(created)


@router.post("/{database_id}/rotate", response_model=Envelope[DatabaseOut])
async def rotate_password(
    server_id: str,
    database_id: str,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: Authenticated,
) -> Envelope[DatabaseOut]:
    """A new password; the user's open sessions are ended. 503 when the host is unavailable."""
    vault = service.Vault.of(runtime.settings)
    return ok(
        await service.rotate_password(session, principal, server_id, database_id, vault=vault)
    )


@router.delete("/{database_id}", response_model=Envelope[None])
async def delete_database(
    server_id: str,
    database_id: str,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: Authenticated,
) -> Envelope[None]:
    """Drop the database and its user on the host, ending their sessions (503 when the
    host is unavailable; the database is then kept)."""
    vault = service.Vault.of(runtime.settings)
    await service.delete_database(session, principal, server_id, database_id, vault=vault)
    return ok(None)
