"""Creating the async engine for SQLite or PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from hostplane.core.config import Settings

# Execution option read by the SQLite "begin" hook: "IMMEDIATE" (default) or "DEFERRED".
SQLITE_BEGIN_OPTION = "hostplane_sqlite_begin"


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, for transactions that only read."""
    return engine.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the driver so "begin" below
        # decides how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL lets readers run beside the writer; foreign keys are off by
        # default in SQLite; a busy timeout turns lock contention into waiting.
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=15000",
            "PRAGMA synchronous=NORMAL",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # BEGIN IMMEDIATE takes the write lock up front. A deferred transaction
        # that reads and then writes fails at once with SQLITE_BUSY when
        # another writer got there first; an immediate one waits its turn
        # (busy_timeout). This is also what makes job claiming exclusive on
        # SQLite, where FOR UPDATE SKIP LOCKED does not exist. Read-only work
        # (GET requests) asks for a deferred transaction instead, so readers
        # never queue behind writers (WAL gives them a snapshot).
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {'DEFERRED' if mode == 'DEFERRED' else 'IMMEDIATE'}")


def create_engine(settings: Settings) -> AsyncEngine:
    """The engine for ``settings.database_url``, tuned for its backend."""
    if settings.is_sqlite:
        database = make_url(settings.database_url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            settings.database_url,
            echo=settings.database_echo,
            connect_args={"timeout": 15},
        )
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        settings.database_url,
        echo=settings.database_echo,
        pool_size=10,
        max_overflow=10,
        pool_recycle=1800,
        # No ping before each checkout (a round trip per transaction): a
        # connection found dead runs its first statement again on a fresh
        # one (RetryingSession), and the disconnect invalidates the pool.
        pool_pre_ping=False,
    )
