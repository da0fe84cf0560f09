"""``/api/system/health`` and ``/api/system/events``."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import isoformat, utcnow
from hostplane.core.runtime import Runtime
from hostplane.platform.jobs.registry import JobRegistry
from hostplane.platform.jobs.worker import Worker
from tests.platform.webhooks.helpers import deliver_all
from tests.platform.webhooks.test_delivery import _emit, _endpoint
from tests.support.factories import make_job
from tests.support.identity import logged_in, other_tenant, platform_tenant
from tests.support.infra import in_tenant, make_node
from tests.support.webhooks import Answer, receiver


async def test_health_aggregates_the_panel_database_bus_queue_and_nodes(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="admin")
    tenant = await platform_tenant(db)
    node, _secret = await make_node(db, tenant=tenant, name="alpha")
    async with in_tenant(db, tenant):
        row = await db.get(type(node), node.id)
        assert row is not None
        row.health = {
            "cpuPercent": 12.5,
            "memoryUsageMb": 1024,
            "memoryTotalMb": 4096,
            "diskUsageMb": 500,
            "diskTotalMb": 1000,
            "containerCount": 3,
            "uptimeSeconds": 99,
        }
    answer = await client.get("/api/system/health", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["database"]["status"] == "ok" and data["bus"]["kind"] == "memory"
    assert data["panel"]["pid"] > 0 and data["panel"]["maxRssBytes"] > 0
    assert data["queue"]["workers"] == 0 and data["status"] == "degraded"
    (alpha,) = data["nodes"]
    assert alpha["name"] == "alpha" and alpha["status"] == "online"
    assert alpha["cpuPercent"] == 12.5 and alpha["memoryPercent"] == 25.0
    assert alpha["diskPercent"] == 50.0 and alpha["containerCount"] == 3

    customer = await logged_in(client, db, role="customer")
    refused = await client.get("/api/system/health", headers=customer.headers)
    assert refused.status_code == 403


async def test_events_log_jobs_and_deliveries_newest_first_with_cursor_and_filters(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    admin = await logged_in(client, db, role="admin")
    tenant = await platform_tenant(db)
    before = isoformat(utcnow())
    registry = JobRegistry()

    async def broken(_ctx: object, **_ids: object) -> None:
        raise RuntimeError("boom")

    registry.register("test.broken", broken)
    await make_job(db, name="test.broken", tenant=tenant, max_attempts=2, thing_id="t1")
    worker = Worker(runtime, registry=registry)
    await worker.run_until_idle()
    await asyncio.sleep(0.3)  # the test queue's retry backoff
    await worker.run_until_idle()
    async with receiver(script=[Answer(500)]) as hook:
        await _endpoint(runtime, tenant.id, hook, ["*"])
        await _emit(runtime, tenant.id, "server.updated", id="s1")
        await deliver_all(runtime)

    answer = await client.get("/api/system/events", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    types = [item["type"] for item in body["data"]]
    assert types == [
        "webhook.delivery.succeeded",
        "webhook.delivery.retrying",
        "job.failed",
        "job.started",
        "job.retrying",
        "job.started",
    ]
    assert body["pagination"] == {"limit": 20, "nextCursor": None}
    assert body["data"][2]["subjectId"] and body["data"][2]["data"]["errorCode"]

    first = (
        await client.get("/api/system/events", params={"limit": 4}, headers=admin.headers)
    ).json()
    assert [item["type"] for item in first["data"]] == types[:4]
    cursor = first["pagination"]["nextCursor"]
    rest = (
        await client.get(
            "/api/system/events", params={"limit": 4, "cursor": cursor}, headers=admin.headers
        )
    ).json()
    assert [item["type"] for item in rest["data"]] == types[4:]
    assert rest["pagination"]["nextCursor"] is None

    family = (
        await client.get("/api/system/events", params={"type": "job.*"}, headers=admin.headers)
    ).json()
    assert {item["type"] for item in family["data"]} == {
        "job.started",
        "job.retrying",
        "job.failed",
    }
    exact = (
        await client.get("/api/system/events", params={"type": "job.failed"}, headers=admin.headers)
    ).json()
    assert len(exact["data"]) == 1
    window = (
        await client.get(
            "/api/system/events", params={"since": before, "until": before}, headers=admin.headers
        )
    ).json()
    assert window["data"] == []

    foreign = await logged_in(client, db, role="admin", tenant=await other_tenant(db))
    theirs = (await client.get("/api/system/events", headers=foreign.headers)).json()
    assert theirs["data"] == []

    for params in (
        {"cursor": "../x"},
        {"limit": 0},
        {"limit": 101},
        {"since": "yesterday"},
        {"type": "DROP TABLE"},
    ):
        bad = await client.get("/api/system/events", params=params, headers=admin.headers)
        assert bad.status_code == 400, (params, bad.text)
        assert bad.json()["error"]["code"] == "VALIDATION_ERROR"
