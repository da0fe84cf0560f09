"""Migrations build exactly the schema the models describe, on both backends."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from hostplane.core.db.engine import create_engine
from hostplane.migrations.runner import current_revision, head_revision, upgrade
from hostplane.models import metadata
from tests.conftest import POSTGRES_URL, make_settings
from tests.support.databases import empty_database


@pytest.fixture
async def empty_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a database with no tables at all."""
    async with empty_database(POSTGRES_URL, tmp_path) as url:
        engine = create_engine(make_settings(tmp_path, database_url=url))
        try:
            yield engine
        finally:
            await engine.dispose()


async def test_upgrade_builds_the_models_schema(empty_engine: AsyncEngine) -> None:
    assert await current_revision(empty_engine) is None
    await upgrade(empty_engine)
    assert await current_revision(empty_engine) == head_revision()

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with empty_engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_upgrade_is_idempotent(empty_engine: AsyncEngine) -> None:
    await upgrade(empty_engine)
    await upgrade(empty_engine)
    assert await current_revision(empty_engine) == head_revision()
