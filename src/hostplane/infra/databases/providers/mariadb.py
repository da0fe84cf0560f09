"""MariaDB and MySQL hosts through aiomysql.

Account names and passwords are bound as parameters (``%s@%s`` works because
account names are string literals); database names cannot be bound, so they
are whitelisted (:func:`check_identifier`) and backtick-quoted. Open sessions
survive both ``ALTER USER`` and ``DROP USER``, so rotate and drop end them
through the process list.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiomysql
import pymysql

from hostplane.infra.databases.providers.base import (
    AlreadyOnHost,
    HostAccess,
    HostRejected,
    HostUnavailable,
    check_identifier,
)

_ACCESS_DENIED = {1044, 1045, 1142, 1227, 1410, 1698}
_DATABASE_EXISTS = 1007
_USER_OPERATION_FAILED = 1396  # CREATE USER of an account that exists
_UNKNOWN_THREAD = 1094  # the session ended by itself before KILL reached it


def _reason(exc: BaseException) -> str:
    args: tuple[Any, ...] = exc.args
    reason = args[1] if len(args) >= 2 and isinstance(args[1], str) else str(exc)
    # "Can't connect to MySQL server" says nothing of why; the socket's error does.
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and str(cause) not in reason:
        reason = f"{reason} ({cause})"
    return reason or type(exc).__name__


def _code(exc: BaseException) -> int | None:
    args: tuple[Any, ...] = exc.args
    return args[0] if args and isinstance(args[0], int) else None


class MariaDbEngine:
    def __init__(self, access: HostAccess) -> None:
        self._access = access

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        access = self._access
        try:
            connection = await asyncio.wait_for(
                aiomysql.connect(
                    host=access.host,
                    port=access.port,
                    user=access.username,
                    password=access.password,
                    connect_timeout=access.timeout,
                    autocommit=True,
                ),
                access.timeout + 1,
            )
        except TimeoutError as exc:
            raise HostUnavailable(
                f"The database host did not answer within {access.timeout:g} s"
            ) from exc
        except pymysql.err.OperationalError as exc:
            if _code(exc) in _ACCESS_DENIED:
                raise HostRejected(
                    f"The database host refused the credentials: {_reason(exc)}"
                ) from exc
            raise HostUnavailable(f"The database host is unreachable: {_reason(exc)}") from exc
        except (OSError, pymysql.err.MySQLError) as exc:
            raise HostUnavailable(f"The database host is unreachable: {_reason(exc)}") from exc
        try:
            yield connection
        finally:
            try:
                await asyncio.wait_for(connection.ensure_closed(), access.timeout)
            except (TimeoutError, OSError, pymysql.err.MySQLError):
                connection.close()

    async def _run(
        self, connection: Any, statement: str, args: Sequence[object] = ()
    ) -> list[tuple[Any, ...]]:
        """One statement with a deadline; driver errors become the adapter's errors."""
        try:
            async with connection.cursor() as cursor:
                # Server notes ("user does not exist" on DROP ... IF EXISTS) arrive as
                # Python warnings; they are expected here, not news.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    await asyncio.wait_for(
                        cursor.execute(statement, tuple(args) or None), self._access.timeout
                    )
                return list(await cursor.fetchall())
        except TimeoutError as exc:
            raise HostUnavailable(
                f"The database host did not answer within {self._access.timeout:g} s"
            ) from exc
        except pymysql.err.MySQLError as exc:
            code = _code(exc)
            if code in _ACCESS_DENIED:
                raise HostRejected(f"The database host refused: {_reason(exc)}") from exc
            if code in (_DATABASE_EXISTS, _USER_OPERATION_FAILED, _UNKNOWN_THREAD):
                raise
            if isinstance(exc, pymysql.err.OperationalError) and code is not None and code >= 2000:
                raise HostUnavailable(f"The database host went away: {_reason(exc)}") from exc
            raise HostRejected(f"The database host refused: {_reason(exc)}") from exc
        except OSError as exc:
            raise HostUnavailable(f"The database host went away: {_reason(exc)}") from exc

    async def validate(self) -> None:
        async with self._connection() as connection:
            [(current,)] = await self._run(connection, "SELECT CURRENT_USER()")
            user, _, host = str(current).rpartition("@")
            rows = await self._run(
                connection,
                "SELECT PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.USER_PRIVILEGES"
                " WHERE GRANTEE = %s",
                (f"'{user}'@'{host}'",),
            )
        held = {str(kind) for kind, _ in rows}
        missing = sorted({"CREATE", "CREATE USER", "DROP"} - held)
        if missing or not any(str(grantable) == "YES" for _, grantable in rows):
            needs = ", ".join(missing) if missing else "GRANT OPTION"
            raise HostRejected(
                f"The administrative user {current} lacks global privileges: {needs}"
            )

    async def exists(self, *, database: str) -> bool:
        async with self._connection() as connection:
            rows = await self._run(
                connection,
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                (database,),
            )
        return bool(rows)

    async def create(self, *, database: str, username: str, password: str) -> None:
        name = check_identifier(database)
        remote = self._access.remote_pattern
        async with self._connection() as connection:
            try:
                await self._run(
                    connection,
                    f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
                )
            except pymysql.err.MySQLError as exc:
                raise AlreadyOnHost(
                    "A database with this name already exists on the host",
                    details={"name": database},
                ) from exc
            try:
                try:
                    await self._run(
                        connection,
                        "CREATE USER %s@%s IDENTIFIED BY %s",
                        (username, remote, password),
                    )
                except pymysql.err.MySQLError as exc:
                    raise AlreadyOnHost(
                        "A user with this name already exists on the host",
                        details={"username": username},
                    ) from exc
                try:
                    await self._run(
                        connection,
                        f"GRANT ALL PRIVILEGES ON `{name}`.* TO %s@%s",
                        (username, remote),
                    )
                except BaseException:
                    with contextlib.suppress(HostUnavailable, HostRejected, pymysql.err.MySQLError):
                        await self._run(connection, "DROP USER IF EXISTS %s@%s", (username, remote))
                    raise
            except BaseException:
                # Leave nothing half-made: the caller's row is rolled back too.
                with contextlib.suppress(HostUnavailable, HostRejected, pymysql.err.MySQLError):
                    await self._run(connection, f"DROP DATABASE IF EXISTS `{name}`")
                raise

    async def _end_sessions(self, connection: Any, username: str) -> None:
        rows = await self._run(
            connection, "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (username,)
        )
        for (thread_id,) in rows:
            # Ended by itself meanwhile (1094) is what we wanted anyway.
            with contextlib.suppress(pymysql.err.MySQLError):
                await self._run(connection, f"KILL CONNECTION {int(thread_id)}")

    async def rotate(self, *, username: str, password: str) -> None:
        async with self._connection() as connection:
            await self._run(
                connection,
                "ALTER USER %s@%s IDENTIFIED BY %s",
                (username, self._access.remote_pattern, password),
            )
            await self._end_sessions(connection, username)

    async def drop(self, *, database: str, username: str) -> None:
        name = check_identifier(database)
        async with self._connection() as connection:
            await self._run(
                connection, "DROP USER IF EXISTS %s@%s", (username, self._access.remote_pattern)
            )
            await self._end_sessions(connection, username)
            await self._run(connection, f"DROP DATABASE IF EXISTS `{name}`")
