"""Empty databases for tests that must start from nothing (migrations, real processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from hostplane.core.ids import new_id


@asynccontextmanager
async def empty_database(postgres_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a database with no tables: a new SQLite file, or a new PostgreSQL database."""
    if not postgres_url:
        yield f"sqlite+aiosqlite:///{tmp_path / f'empty-{new_id()}.db'}"
        return
    name = f"hostplane_empty_{new_id()}"
    admin = create_async_engine(
        make_url(postgres_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
