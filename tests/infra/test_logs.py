"""Console history: append, page back, filter by stream, retention."""

from datetime import timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import shifted, utcnow
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


async def test_before_takes_a_timestamp_or_an_id_and_refuses_out_of_range(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    with shifted(-timedelta(hours=2)):
        await logs.append_console(db, fleet.server.id, "stdout", ["old"])
    await logs.append_console(db, fleet.server.id, "stdout", ["new"])
    await db.commit()
    base = f"/api/servers/{fleet.server.id}/logs"
    an_hour_ago = (utcnow() - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    older = await client.get(base, params={"before": an_hour_ago}, headers=fleet.owner.headers)
    assert older.status_code == 200, older.text
    assert [line["data"] for line in older.json()["data"]] == ["old"]
    newest_id = older.json()["data"][0]["id"] + 1
    by_id = await client.get(base, params={"before": newest_id}, headers=fleet.owner.headers)
    assert [line["data"] for line in by_id.json()["data"]] == ["old"]
    for junk in (
        "100000000000000000000",
        "9" * 5000,
        "1e30",
        "NaN",
        "-1",
        "0",
        "yesterday",
        "0001-01-01T00:00:00+05:00",
    ):
        refused = await client.get(base, params={"before": junk}, headers=fleet.owner.headers)
        assert refused.status_code == 400, (junk, refused.text)
        assert refused.json()["error"]["code"] == "VALIDATION_ERROR"
