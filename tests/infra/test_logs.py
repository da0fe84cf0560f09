"""Console history: append, page back, filter by stream, retention."""

from datetime import timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import shifted
from hostplane.infra.servers import logs
from hostplane.infra.servers.models import ServerLog
from tests.infra.conftest import Fleet


async def test_history(client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet) -> None:
    await logs.append_console(db, fleet.server.id, "stdout", [f"line {n}" for n in range(5)])
    await logs.append_console(db, fleet.server.id, "stderr", ["oops"])
    assert await logs.append_console(db, "missing", "stdout", ["x"]) == 0
    await db.commit()
    base = f"/api/servers/{fleet.server.id}/logs"
    everything = (await client.get(base, headers=fleet.owner.headers)).json()["data"]
    assert [line["data"] for line in everything] == [*(f"line {n}" for n in range(5)), "oops"]
    assert everything[0]["serverId"] == fleet.server.id and everything[0]["timestamp"]
    last_two = (await client.get(f"{base}?limit=2", headers=fleet.owner.headers)).json()["data"]
    assert [line["data"] for line in last_two] == ["line 4", "oops"]
    before = last_two[0]["id"]
    older = (
        await client.get(f"{base}?limit=2&before={before}", headers=fleet.owner.headers)
    ).json()["data"]
    assert [line["data"] for line in older] == ["line 2", "line 3"]
    errors = (await client.get(f"{base}?stream=stderr", headers=fleet.owner.headers)).json()["data"]
    assert [line["data"] for line in errors] == ["oops"]
    assert (await client.get(f"{base}?limit=1001", headers=fleet.owner.headers)).status_code == 400
    assert (await client.get(base, headers=fleet.other.headers)).status_code == 404


async def test_retention(db: AsyncSession, fleet: Fleet) -> None:
    with shifted(-timedelta(days=8)):
        await logs.append_console(db, fleet.server.id, "stdout", ["ancient"])
    await logs.append_console(db, fleet.server.id, "stdout", [f"l{n}" for n in range(6)])
    await db.commit()
    deleted = await logs.prune_logs(db, max_lines_per_server=4)
    await db.commit()
    assert deleted == 3
    kept = (await db.scalars(select(ServerLog.data).order_by(ServerLog.seq))).all()
    assert kept == ["l2", "l3", "l4", "l5"]
    assert await db.scalar(select(func.count()).select_from(ServerLog)) == 4
