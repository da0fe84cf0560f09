"""Alembic environment.

Run through :mod:`hostplane.migrations.runner`, which hands over a live
connection; ``alembic`` on the command line works too (it builds an engine
from the settings).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from hostplane.models import metadata

config = context.config


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode recreates tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    from hostplane.core.config import load_settings
    from hostplane.core.db.engine import create_engine

    engine = create_engine(load_settings())
    async with engine.connect() as connection:
        await connection.run_sync(_configure_and_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `hostplane migrate`")

shared = config.attributes.get("connection")
if shared is not None:
    _configure_and_run(shared)
else:
    asyncio.run(_run_with_own_engine())
