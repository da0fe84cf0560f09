"""A pooled connection the server closed: the request still succeeds, without pinging first."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import make_url

from hostplane.core.runtime import Runtime
from tests.conftest import POSTGRES_URL, ClientAs
from tests.support.auth import operator

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="server-side disconnects: PostgreSQL")


async def _terminate_other_backends() -> int:
    url = make_url(POSTGRES_URL)
    connection = await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        return int(
            await connection.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await connection.close()


def test_pool_does_not_ping_before_each_checkout(runtime: Runtime) -> None:
    assert runtime.engine.pool._pre_ping is False


async def test_request_after_backends_were_terminated_succeeds(
    client_as: ClientAs, runtime: Runtime
) -> None:
    http = await client_as(operator())
    assert (await http.get("/api/admin/roles")).status_code == 200
    assert await _terminate_other_backends() >= 1
    second = await http.get("/api/admin/roles")
    assert second.status_code == 200, second.text
    third = await http.get("/api/admin/roles")
    assert third.status_code == 200, third.text
