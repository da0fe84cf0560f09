"""Dependencies routers declare with ``Annotated``: runtime, session, caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from hostplane.core.context import RequestContext, attach_context
from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import Forbidden, Unauthorized
from hostplane.core.http.middleware import route_template
from hostplane.core.pagination import PageParams
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_runtime(connection: HTTPConnection) -> Runtime:
    # Async on purpose: FastAPI runs a plain ``def`` dependency in a worker
    # thread, a thread hop on every request for an attribute read.
    runtime: Runtime = connection.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_principal(connection: HTTPConnection, runtime: RuntimeDep) -> Principal:
    """Resolve the caller once per request, from the principal cache when it can."""
    cached = getattr(connection.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    cache = runtime.principal_cache
    credential = _credential(connection) if cache.enabled else None
    if credential is None:
        principal = await runtime.authenticate(connection, runtime)
    else:
        # The client address is part of the key: an API key may be limited
        # to some addresses.
        key = (credential, client_ip(connection))
        found = cache.get(key)
        if found is None:
            generation = cache.generation
            principal = await runtime.authenticate(connection, runtime)
            cache.put(key, principal, generation)
        else:
            principal = found
    connection.state.principal = principal
    return principal


def _credential(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization")
    if header:
        return header
    if connection.scope["type"] == "websocket":
        return connection.query_params.get("token") or None
    return None


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def client_ip(connection: HTTPConnection) -> str | None:
    # ForwardedClientMiddleware has already replaced the peer with the
    # forwarded client when the peer is a trusted proxy (http.trusted_proxies).
    return connection.client.host if connection.client else None


async def get_session(
    connection: HTTPConnection, runtime: RuntimeDep, principal: PrincipalDep
) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: commits before the response is sent.

    The session is confined to the caller's tenant and carries the request
    context (for the audit log). Safe methods get a read-only transaction (no
    write lock on SQLite).
    """
    method = connection.scope.get("method")
    async with runtime.unit_of_work(read_only=method in SAFE_METHODS) as session:
        if principal.kind != "system":
            scope_to_tenant(session, principal.tenant_id)
        attach_context(
            session,
            RequestContext(
                principal=principal,
                request_id=getattr(connection.state, "request_id", None),
                ip=client_ip(connection),
                user_agent=connection.headers.get("user-agent"),
                method=method,
                route=route_template(connection.scope),
                path_params=dict(connection.path_params),
            ),
        )
        yield session


# scope="function": the session commits (or rolls back) before the response
# goes out, so a client never sees success for a change that failed to commit.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def require(permission: str | None = None) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits an authenticated caller holding ``permission``.

    With ``None`` any authenticated caller passes; ownership and per-resource
    grants are checked by the service where the resource is loaded.
    """

    async def dependency(principal: PrincipalDep) -> Principal:
        if not principal.is_authenticated:
            raise Unauthorized("Authentication required")
        if permission is not None and not principal.has(permission):
            raise Forbidden(
                "You do not have permission to perform this action",
                details={"permission": permission},
            )
        return principal

    name = (permission or "authenticated").replace(".", "_").replace("*", "all")
    dependency.__name__ = f"require_{name}"
    return dependency


Authenticated = Annotated[Principal, Depends(require())]
PageDep = Annotated[PageParams, Query()]
