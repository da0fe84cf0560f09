"""Dependencies routers declare with ``Annotated``: runtime, session, caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from hostplane.core.errors import Forbidden, Unauthorized
from hostplane.core.pagination import PageParams
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime


def get_runtime(connection: HTTPConnection) -> Runtime:
    runtime: Runtime = connection.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_session(
    connection: HTTPConnection, runtime: RuntimeDep
) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: commits before the response is sent.

    Safe methods get a read-only transaction (no write lock on SQLite).
    """
    read_only = connection.scope.get("method") in SAFE_METHODS
    async with runtime.unit_of_work(read_only=read_only) as session:
        yield session


# scope="function": the session commits (or rolls back) before the response
# goes out, so a client never sees success for a change that failed to commit.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_principal(connection: HTTPConnection, runtime: RuntimeDep) -> Principal:
    """Resolve the caller once per request."""
    cached = getattr(connection.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    principal = await runtime.authenticate(connection, runtime)
    connection.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


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

    dependency.__name__ = (
        f"require_{(permission or 'authenticated').replace('.', '_').replace('*', 'all')}"
    )
    return dependency


PageDep = Annotated[PageParams, Query()]
