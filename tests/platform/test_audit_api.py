"""Audit entries written by requests, and the two routes that list them."""

from datetime import timedelta

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import isoformat, shifted, utcnow
from hostplane.core.errors import Conflict
from hostplane.core.http.deps import SessionDep
from hostplane.core.http.envelope import Envelope, ok
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.identity.tenants.models import Tenant
from hostplane.platform.audit.models import AuditLog
from hostplane.platform.audit.service import record
from hostplane.platform.jobs.models import Job
from hostplane.platform.jobs.registry import JobRegistry
from hostplane.platform.jobs.worker import Worker
from tests.conftest import ClientAs
from tests.support.auth import operator
from tests.support.factories import make_job, make_tenant, make_user

probe = APIRouter(prefix="/api/probe")


@probe.post("/widgets/{widget_id}/poke")
async def poke(widget_id: str, session: SessionDep) -> Envelope[str]:
    return ok(widget_id)


@probe.post("/widgets/{widget_id}/polish")
async def polish(widget_id: str, session: SessionDep) -> Envelope[str]:
    record(
        session,
        action="widget.polished",
        resource_type="widget",
        resource_id=widget_id,
        metadata={"shine": 11},
    )
    return ok(widget_id)


@probe.post("/widgets/{widget_id}/break")
async def break_widget(widget_id: str, session: SessionDep) -> None:
    session.add(Tenant(name="should vanish", slug=f"vanish-{widget_id}"))
    await session.flush()
    raise Conflict("refused after writing")


@probe.get("/widgets/{widget_id}")
async def show(widget_id: str, session: SessionDep) -> Envelope[str]:
    return ok(widget_id)


@probe.put("/users/me")
async def update_me(session: SessionDep) -> Envelope[bool]:
    return ok(True)


@pytest.fixture
def probe_app(app: FastAPI) -> FastAPI:
    app.include_router(probe)
    return app


async def audit_rows(db: AsyncSession) -> list[AuditLog]:
    await db.commit()  # a fresh snapshot: see what the app wrote
    return list(
        await db.scalars(
            select(AuditLog).order_by(AuditLog.id).execution_options(populate_existing=True)
        )
    )


async def fail_job(runtime: Runtime, db: AsyncSession, job: Job) -> None:
    registry = JobRegistry()

    async def handler(_ctx: object, **_ids: object) -> None:
        raise RuntimeError("boom")

    registry.register(job.type, handler)
    await Worker(runtime, registry=registry).run_until_idle()
    await db.commit()


# ---- what requests write -------------------------------------------------


async def test_a_mutating_request_writes_one_entry_in_its_transaction(
    client_as: ClientAs, runtime: Runtime, db: AsyncSession
) -> None:
    tenant = await make_tenant(db)
    job = await make_job(db, name="flaky", tenant=tenant, max_attempts=1, server_id="srv-1")
    await fail_job(runtime, db, job)
    assert await audit_rows(db) == [], "workers and factories record nothing by themselves"

    http = await client_as(operator(tenant.id, "job.*"))
    response = await http.post(f"/api/jobs/{job.id}/retry")
    assert response.status_code == 200, response.text

    [entry] = await audit_rows(db)
    assert (entry.action, entry.resource_type, entry.resource_id) == ("job.retry", "job", job.id)
    assert (entry.actor_type, entry.actor_id, entry.user_id) == ("user", "op-user", "op-user")
    assert entry.tenant_id == tenant.id
    assert entry.ip_address == "127.0.0.1"
    assert entry.user_agent is not None and entry.user_agent.startswith("python-httpx/")
    assert entry.request_id == response.headers["x-request-id"]
    assert entry.meta == {
        "method": "POST",
        "route": "/api/jobs/{job_id}/retry",
        "params": {"job_id": job.id},
    }


async def test_reads_write_nothing(
    client_as: ClientAs, probe_app: FastAPI, db: AsyncSession
) -> None:
    await make_job(db, name="x")
    http = await client_as(operator())
    assert (await http.get("/api/jobs")).status_code == 200
    assert (await http.get("/api/probe/widgets/w1")).status_code == 200
    assert (await http.get("/api/audit")).status_code == 200
    assert await audit_rows(db) == []


async def test_a_failed_request_writes_nothing(
    client_as: ClientAs, probe_app: FastAPI, db: AsyncSession
) -> None:
    queued = await make_job(db, name="later")
    http = await client_as(operator())
    assert (await http.post(f"/api/jobs/{queued.id}/retry")).status_code == 409
    assert (await http.post("/api/probe/widgets/w1/break")).status_code == 409
    assert (await http.post("/api/jobs/01nosuchjob0000000000000000/retry")).status_code == 404
    assert await audit_rows(db) == []


async def test_an_explicit_entry_replaces_the_generic_one(
    client_as: ClientAs, probe_app: FastAPI, db: AsyncSession
) -> None:
    http = await client_as(operator())
    response = await http.post("/api/probe/widgets/w7/polish", headers={"User-Agent": "ops-ui/2"})
    assert response.status_code == 200
    [entry] = await audit_rows(db)
    assert (entry.action, entry.resource_type, entry.resource_id) == (
        "widget.polished",
        "widget",
        "w7",
    )
    assert entry.meta == {"shine": 11}
    assert (entry.actor_id, entry.user_agent, entry.ip_address) == (
        "op-user",
        "ops-ui/2",
        "127.0.0.1",
    )
    assert entry.request_id == response.headers["x-request-id"]


async def test_generic_entries_follow_the_route(
    client: httpx.AsyncClient, client_as: ClientAs, probe_app: FastAPI, db: AsyncSession
) -> None:
    http = await client_as(operator())
    assert (await http.put("/api/probe/users/me")).status_code == 200
    assert (await client.post("/api/probe/widgets/w2/poke")).status_code == 200
    me, poked = await audit_rows(db)
    assert (me.action, me.resource_type, me.resource_id) == ("user.update", "user", "op-user")
    assert (poked.action, poked.resource_type, poked.resource_id) == ("widget.poke", "widget", "w2")
    assert (poked.actor_type, poked.actor_id, poked.tenant_id) == ("anonymous", None, None)


# ---- the routes ----------------------------------------------------------


async def seed_entries(runtime: Runtime, entries: list[dict[str, object]]) -> None:
    """One unit of work per entry, in order (so the last is the newest)."""
    for fields in entries:
        async with runtime.unit_of_work() as session:
            record(session, **fields)  # type: ignore[arg-type]


async def test_the_routes_need_audit_read(client: httpx.AsyncClient, client_as: ClientAs) -> None:
    for path in ("/api/admin/audit-logs", "/api/audit"):
        anonymous = await client.get(path)
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "UNAUTHORIZED"
        customer = await client_as(operator(None, "server.read"))
        forbidden = await customer.get(path)
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "FORBIDDEN"
        for grants in (("audit.read",), ("audit.*",), ("*",)):
            reader = await client_as(operator(None, *grants))
            assert (await reader.get(path)).status_code == 200


async def test_tenants_read_only_their_own_entries(
    client_as: ClientAs, runtime: Runtime, db: AsyncSession
) -> None:
    mine, theirs = await make_tenant(db, name="Mine"), await make_tenant(db, name="Theirs")
    platform = Tenant(name="Platform", slug="platform", status="active", is_platform=True)
    db.add(platform)
    await db.commit()
    await seed_entries(
        runtime,
        [
            {"action": "thing.mine", "resource_type": "thing", "tenant_id": mine.id},
            {"action": "thing.theirs", "resource_type": "thing", "tenant_id": theirs.id},
            {"action": "thing.platform", "resource_type": "thing", "tenant_id": None},
        ],
    )

    async def actions(principal: Principal, path: str) -> list[str]:
        http = await client_as(principal)
        body = (await http.get(path)).json()
        return [entry["action"] for entry in body["data"]]

    for path in ("/api/admin/audit-logs", "/api/audit"):
        assert await actions(operator(mine.id, "audit.read"), path) == ["thing.mine"]
        # Every permission inside a customer tenant is still that tenant's.
        assert await actions(operator(mine.id, "*"), path) == ["thing.mine"]
        everything = ["thing.platform", "thing.theirs", "thing.mine"]
        assert await actions(operator(platform.id, "audit.read"), path) == everything
        assert await actions(operator(None, "audit.read"), path) == everything


async def test_catalyst_route_fields_filters_and_pages(
    client_as: ClientAs, runtime: Runtime, db: AsyncSession
) -> None:
    tenant = await make_tenant(db)
    user = await make_user(db, tenant=tenant, username="johndoe")
    as_user = Principal(kind="user", id=user.id, tenant_id=tenant.id, user_id=user.id)
    as_key = Principal(kind="api_key", id="key-1", tenant_id=tenant.id, user_id=user.id)
    await seed_entries(
        runtime,
        [
            {
                "action": "server.start",
                "resource_type": "server",
                "resource_id": "server123",
                "metadata": {"serverName": "minecraft-lobby"},
                "actor": as_user,
            },
            {
                "action": "server.stop",
                "resource_type": "server",
                "resource_id": "s2",
                "actor": as_key,
            },
            {
                "action": "server.start",
                "resource_type": "server",
                "resource_id": "s3",
                "tenant_id": tenant.id,
            },
        ],
    )
    http = await client_as(operator(tenant.id, "audit.read"))

    body = (await http.get("/api/admin/audit-logs")).json()
    assert body["success"] is True
    assert body["pagination"] == {"page": 1, "limit": 100, "total": 3, "pages": 1}
    newest, by_key, oldest = body["data"]
    assert set(oldest) == {
        "id",
        "userId",
        "username",
        "action",
        "resourceType",
        "resourceId",
        "metadata",
        "ipAddress",
        "createdAt",
    }
    assert oldest["userId"] == user.id and oldest["username"] == "johndoe"
    assert (oldest["action"], oldest["resourceType"], oldest["resourceId"]) == (
        "server.start",
        "server",
        "server123",
    )
    assert oldest["metadata"] == {"serverName": "minecraft-lobby"}
    assert oldest["ipAddress"] is None, "written outside a request"
    assert oldest["createdAt"].endswith("Z")
    assert (by_key["userId"], by_key["username"]) == (user.id, "johndoe"), "a key's creator"
    assert (newest["userId"], newest["username"]) == (None, None), "the system acted"

    by_user = (await http.get("/api/admin/audit-logs", params={"userId": user.id})).json()
    assert [entry["resourceId"] for entry in by_user["data"]] == ["s2", "server123"]
    by_action = (await http.get("/api/admin/audit-logs", params={"action": "server.start"})).json()
    assert [entry["resourceId"] for entry in by_action["data"]] == ["s3", "server123"]
    assert (await http.get("/api/admin/audit-logs", params={"action": "server"})).json()[
        "data"
    ] == [], "Catalyst's action filter is exact"
    paged = (await http.get("/api/admin/audit-logs", params={"limit": 2, "page": 2})).json()
    assert [entry["resourceId"] for entry in paged["data"]] == ["server123"]
    assert paged["pagination"] == {"page": 2, "limit": 2, "total": 3, "pages": 2}

    for bad in ({"limit": 101}, {"limit": 0}, {"page": 0}, {"action": "drop table;"}):
        response = await http.get("/api/admin/audit-logs", params=bad)
        assert response.status_code == 400, bad
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_mpanel_route_fields_and_filters(
    client_as: ClientAs, runtime: Runtime, db: AsyncSession
) -> None:
    tenant = await make_tenant(db)
    actor = Principal(kind="user", id="user-1", tenant_id=tenant.id)
    with shifted(timedelta(days=-2)):
        await seed_entries(
            runtime,
            [
                {
                    "action": "subscription.created",
                    "resource_type": "subscription",
                    "resource_id": "sub-1",
                    "actor": actor,
                },
            ],
        )
    await seed_entries(
        runtime,
        [
            {
                "action": "subscription.cancelled",
                "resource_type": "subscription",
                "resource_id": "sub-1",
                "actor": actor,
            },
            {"action": "subscriptions.odd", "resource_type": "thing", "tenant_id": tenant.id},
            {
                "action": "invoice.paid",
                "resource_type": "invoice",
                "resource_id": "inv-1",
                "tenant_id": tenant.id,
            },
        ],
    )
    http = await client_as(operator(tenant.id, "audit.read"))

    async def ids(**params: str) -> list[str | None]:
        response = await http.get("/api/audit", params=params)
        assert response.status_code == 200, response.text
        return [entry["resourceId"] for entry in response.json()["data"]]

    body = (await http.get("/api/audit")).json()
    assert body["pagination"]["limit"] == 20 and body["pagination"]["total"] == 4
    first = body["data"][-1]
    assert first == {
        "id": first["id"],
        "tenantId": tenant.id,
        "actorId": "user-1",
        "action": "subscription.created",
        "resourceType": "subscription",
        "resourceId": "sub-1",
        "metadata": {},
        "createdAt": first["createdAt"],
    }
    assert [entry["action"] for entry in body["data"]] == [
        "invoice.paid",
        "subscriptions.odd",
        "subscription.cancelled",
        "subscription.created",
    ], "newest first"

    assert await ids(actorId="user-1") == ["sub-1", "sub-1"]
    assert await ids(actorId="system") == ["inv-1", None]
    assert await ids(type="subscription.created") == ["sub-1"]
    # A prefix of whole words: "subscription" is not "subscriptions".
    assert len(await ids(type="subscription")) == 2
    assert len(await ids(type="subscription.*")) == 2
    assert await ids(resourceType="invoice") == ["inv-1"]
    assert await ids(resourceId="sub-1", type="subscription.cancelled") == ["sub-1"]
    assert len(await ids(since=isoformat(utcnow() - timedelta(days=1)))) == 3
    assert len(await ids(since=(utcnow() - timedelta(days=3)).date().isoformat())) == 4
    assert await ids(since=isoformat(utcnow() + timedelta(minutes=5))) == []

    for bad in ({"since": "yesterday"}, {"type": "sub%"}, {"resourceType": "a b"}, {"limit": 500}):
        response = await http.get("/api/audit", params=bad)
        assert response.status_code == 400, bad
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"]["fields"][0]["field"] in bad
