"""Real database hosts for the server-database tests.

MariaDB: the machine's, at ``HOSTPLANE_TEST_MARIADB_URL`` (default
``mysql://root@127.0.0.1:3306``). PostgreSQL: a private instance started for
the run with password (SCRAM) authentication, because the machine's cluster
trusts the loopback address and a rotated password could not be seen to
stop working there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiomysql
import asyncpg
import pymysql

from tests.support.services import missing_service

MARIADB_URL = os.environ.get("HOSTPLANE_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306")
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


@dataclass(frozen=True)
class HostLogin:
    engine: str
    host: str
    port: int
    username: str
    password: str

    def body(self, name: str, **extra: object) -> dict[str, object]:
        """A ``POST /api/admin/database-hosts`` body for this host."""
        return {
            "name": name,
            "engine": self.engine,
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            **extra,
        }


def mariadb_login() -> HostLogin:
    parts = urlsplit(MARIADB_URL)
    return HostLogin(
        engine="mariadb",
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        username=parts.username or "root",
        password=parts.password or "",
    )


async def mariadb_connect(
    login: HostLogin, *, user: str | None = None, password: str | None = None, db: str | None = None
) -> aiomysql.Connection:
    return await aiomysql.connect(
        host=login.host,
        port=login.port,
        user=user or login.username,
        password=login.password if password is None else password,
        db=db,
        connect_timeout=5,
        autocommit=True,
    )


async def require_mariadb() -> HostLogin:
    login = mariadb_login()
    try:
        connection = await mariadb_connect(login)
    except (pymysql.err.MySQLError, OSError) as exc:
        missing_service("MariaDB", str(exc))
    connection.close()
    return login


async def mariadb_cleanup(login: HostLogin, prefixes: list[str]) -> None:
    """Drop what the tests made for servers with these short ids (databases and users)."""
    if not prefixes:
        return
    connection = await mariadb_connect(login)
    try:
        async with connection.cursor() as cursor:
            for prefix in prefixes:
                await cursor.execute(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
                    (f"s{prefix}\\_%",),
                )
                for (name,) in await cursor.fetchall():
                    await cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
                await cursor.execute(
                    "SELECT User, Host FROM mysql.user WHERE User LIKE %s", (f"u{prefix}\\_%",)
                )
                for user, host in await cursor.fetchall():
                    await cursor.execute("DROP USER IF EXISTS %s@%s", (user, host))
    finally:
        connection.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def private_postgres() -> Iterator[HostLogin | str]:
    """A throwaway PostgreSQL with password authentication, or why there is none."""
    binaries = next((d for d in PG_BIN_DIRS if (d / "initdb").exists()), None)
    if binaries is None and shutil.which("initdb") is None:
        yield "initdb is not installed"
        return
    initdb = str(binaries / "initdb") if binaries else "initdb"
    pg_ctl = str(binaries / "pg_ctl") if binaries else "pg_ctl"
    root = Path(tempfile.mkdtemp(prefix="hostplane-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: the cluster belongs to "postgres".
        shutil.chown(root, "postgres")
        root.chmod(0o755)
        as_user = ["runuser", "-u", "postgres", "--"]
    password = "admin-" + os.urandom(8).hex()
    (root / "pw").write_text(password + "\n")
    if as_user:
        shutil.chown(root / "pw", "postgres")
    port = _free_port()
    data = root / "data"
    try:
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-U", "admin", f"--pwfile={root / 'pw'}",
             "-A", "scram-sha-256", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-w", "-t", "30", "-l", str(root / "log"),
             "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        yield f"could not start a private PostgreSQL: {exc}"
        return
    try:
        yield HostLogin("postgresql", "127.0.0.1", port, "admin", password)
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


async def pg_connect(login: HostLogin, *, user: str, password: str, db: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=login.host, port=login.port, user=user, password=password, database=db, timeout=5
    )
