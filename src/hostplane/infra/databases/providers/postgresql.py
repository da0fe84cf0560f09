"""PostgreSQL hosts through asyncpg.

Each server database gets a LOGIN role that owns it; ``CONNECT`` is revoked
from ``PUBLIC`` so no other role (another server's) can open it. DDL cannot
bind parameters: identifiers are whitelisted and double-quoted, the password
is written as an escaped literal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from hostplane.infra.databases.providers.base import (
    AlreadyOnHost,
    HostAccess,
    HostRejected,
    HostUnavailable,
    check_identifier,
)

# The maintenance database every cluster has; the panel connects there.
ADMIN_DATABASE = "postgres"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + check_identifier(name) + '"'


class PostgresEngine:
    def __init__(self, access: HostAccess) -> None:
        self._access = access

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        access = self._access
        try:
            connection = await asyncio.wait_for(
                asyncpg.connect(
                    host=access.host,
                    port=access.port,
                    user=access.username,
                    password=access.password,
                    database=ADMIN_DATABASE,
                    timeout=access.timeout,
                    command_timeout=access.timeout,
                ),
                access.timeout + 1,
            )
        except TimeoutError as exc:
            raise HostUnavailable(
                f"The database host did not answer within {access.timeout:g} s"
            ) from exc
        except (
            asyncpg.InvalidPasswordError,
            asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InsufficientPrivilegeError,
        ) as exc:
            raise HostRejected(f"The database host refused the credentials: {exc}") from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise HostUnavailable(f"The database host is unreachable: {exc}") from exc
        try:
            yield connection
        finally:
            try:
                await asyncio.wait_for(connection.close(), access.timeout)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                connection.terminate()

    async def _run(self, connection: Any, statement: str, *args: object) -> list[Any]:
        try:
            return list(await connection.fetch(statement, *args, timeout=self._access.timeout))
        except TimeoutError as exc:
            raise HostUnavailable(
                f"The database host did not answer within {self._access.timeout:g} s"
            ) from exc
        except (asyncpg.DuplicateDatabaseError, asyncpg.DuplicateObjectError):
            raise
        except asyncpg.PostgresError as exc:
            raise HostRejected(f"The database host refused: {exc}") from exc
        except (OSError, asyncpg.InterfaceError) as exc:
            raise HostUnavailable(f"The database host went away: {exc}") from exc

    async def validate(self) -> None:
        async with self._connection() as connection:
            rows = await self._run(
                connection,
                "SELECT current_user AS name, rolsuper OR (rolcreaterole AND rolcreatedb) AS able"
                " FROM pg_roles WHERE rolname = current_user",
            )
        if not rows or not rows[0]["able"]:
            who = rows[0]["name"] if rows else self._access.username
            raise HostRejected(
                f"The administrative user {who} must be a superuser or have CREATEROLE and CREATEDB"
            )

    async def exists(self, *, database: str) -> bool:
        async with self._connection() as connection:
            rows = await self._run(
                connection, "SELECT 1 FROM pg_database WHERE datname = $1", database
            )
        return bool(rows)

    async def create(self, *, database: str, username: str, password: str) -> None:
        db, role = _ident(database), _ident(username)
        async with self._connection() as connection:
            try:
                await self._run(
                    connection, f"CREATE ROLE {role} LOGIN PASSWORD {_literal(password)}"
                )
            except asyncpg.DuplicateObjectError as exc:
                raise AlreadyOnHost(
                    "A user with this name already exists on the host",
                    details={"username": username},
                ) from exc
            try:
                superuser = await self._run(
                    connection, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                )
                if not superuser or not superuser[0]["rolsuper"]:
                    # CREATE DATABASE ... OWNER needs the creator to be able to act as the owner.
                    await self._run(connection, f"GRANT {role} TO CURRENT_USER")
                try:
                    await self._run(connection, f"CREATE DATABASE {db} OWNER {role}")
                except asyncpg.DuplicateDatabaseError as exc:
                    raise AlreadyOnHost(
                        "A database with this name already exists on the host",
                        details={"name": database},
                    ) from exc
                try:
                    await self._run(connection, f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
                except BaseException:
                    with contextlib.suppress(HostUnavailable, HostRejected):
                        await self._run(connection, f"DROP DATABASE IF EXISTS {db}")
                    raise
            except BaseException:
                # Leave nothing half-made: the caller's row is rolled back too.
                with contextlib.suppress(HostUnavailable, HostRejected):
                    await self._run(connection, f"DROP ROLE IF EXISTS {role}")
                raise

    async def _end_sessions(self, connection: Any, username: str) -> None:
        await self._run(
            connection,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE usename = $1 AND pid <> pg_backend_pid()",
            username,
        )

    async def rotate(self, *, username: str, password: str) -> None:
        async with self._connection() as connection:
            await self._run(
                connection, f"ALTER ROLE {_ident(username)} PASSWORD {_literal(password)}"
            )
            await self._end_sessions(connection, username)

    async def drop(self, *, database: str, username: str) -> None:
        db, role = _ident(database), _ident(username)
        async with self._connection() as connection:
            # No new sessions, end the open ones, then drop (FORCE ends any racer).
            # A role already gone is fine: the drop is idempotent.
            with contextlib.suppress(HostRejected):
                await self._run(connection, f"ALTER ROLE {role} NOLOGIN")
            await self._end_sessions(connection, username)
            await self._run(connection, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            await self._run(connection, f"DROP ROLE IF EXISTS {role}")
