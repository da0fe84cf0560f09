"""``/api/jobs``: list with filters, get, retry."""

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.runtime import Runtime
from hostplane.platform.jobs.models import Job
from hostplane.platform.jobs.registry import JobRegistry
from hostplane.platform.jobs.worker import Worker
from tests.conftest import ClientAs
from tests.support.auth import operator
from tests.support.factories import make_job, make_tenant
from tests.support.identity import platform_tenant


async def fail_job(runtime: Runtime, db: AsyncSession, job: Job) -> None:
    registry = JobRegistry()

    async def handler(_ctx: object, **_ids: object) -> None:
        raise RuntimeError("boom")

    registry.register(job.type, handler)
    await Worker(runtime, registry=registry).run_until_idle()
    await db.commit()


async def test_jobs_are_listed_newest_first_with_filters_and_pagination(
    client_as: ClientAs, db: AsyncSession
) -> None:
    tenant = await make_tenant(db)
    first = await make_job(db, name="server.install", tenant=tenant, server_id="srv-1")
    second = await make_job(db, name="server.install", tenant=tenant, server_id="srv-2")
    third = await make_job(db, name="backup.create", tenant=tenant, backup_id="b-1")
    http = await client_as(operator(tenant.id))

    body = (await http.get("/api/jobs")).json()
    assert body["success"] is True
    assert [job["id"] for job in body["data"]] == [third.id, second.id, first.id]
    assert body["pagination"] == {"page": 1, "limit": 20, "total": 3, "pages": 1}
    listed = body["data"][0]
    assert (
        listed["type"] == "backup.create"
        and listed["status"] == "queued"
        and listed["targetId"] == "b-1"
    )
    assert listed["createdAt"].endswith("Z") and listed["tenantId"] == tenant.id

    by_type = (await http.get("/api/jobs", params={"type": "server.install"})).json()
    assert {job["id"] for job in by_type["data"]} == {first.id, second.id}
    by_target = (await http.get("/api/jobs", params={"targetId": "srv-2"})).json()
    assert [job["id"] for job in by_target["data"]] == [second.id]
    by_status = (await http.get("/api/jobs", params={"status": "failed"})).json()
    assert by_status["data"] == [] and by_status["pagination"]["total"] == 0
    paged = (await http.get("/api/jobs", params={"limit": 2, "page": 2})).json()
    assert [job["id"] for job in paged["data"]] == [first.id]
    assert paged["pagination"] == {"page": 2, "limit": 2, "total": 3, "pages": 2}


async def test_bad_filters_are_validation_errors(client_as: ClientAs) -> None:
    http = await client_as(operator())
    response = await http.get("/api/jobs", params={"status": "exploded"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_a_job_is_shown_with_its_error(
    client_as: ClientAs, runtime: Runtime, db: AsyncSession
) -> None:
    job = await make_job(db, name="flaky", max_attempts=1, node_id="n1")
    await fail_job(runtime, db, job)
    http = await client_as(operator())
    data = (await http.get(f"/api/jobs/{job.id}")).json()["data"]
    assert data["status"] == "failed"
    assert data["attempts"] == 1 and data["maxAttempts"] == 1
    assert data["error"]["code"] == "INTERNAL_ERROR"
    assert "boom" not in data["error"]["message"]
    missing = await http.get("/api/jobs/01nosuchjob0000000000000000")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


async def test_retry_requeues_a_failed_job_and_refuses_others(
    client_as: ClientAs, runtime: Runtime, db: AsyncSession
) -> None:
    failed = await make_job(db, name="flaky", max_attempts=1)
    await fail_job(runtime, db, failed)
    http = await client_as(operator())

    response = await http.post(f"/api/jobs/{failed.id}/retry")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["status"], data["attempts"], data["error"]) == ("queued", 0, None)

    ran: list[str] = []
    registry = JobRegistry()

    async def handler(ctx: object, **_ids: object) -> None:
        ran.append("ran")

    registry.register("flaky", handler)
    assert await Worker(runtime, registry=registry, concurrency=1).run_until_idle() == 1
    await db.commit()
    assert (await db.get(Job, failed.id, populate_existing=True)).status == "succeeded"  # type: ignore[union-attr]
    assert ran == ["ran"]

    queued = await make_job(db, name="later")
    for not_failed in (queued.id, failed.id):
        conflict = await http.post(f"/api/jobs/{not_failed}/retry")
        assert conflict.status_code == 409
        assert conflict.json()["error"]["code"] == "CONFLICT"


async def test_jobs_need_an_authenticated_caller_with_permission(
    client: httpx.AsyncClient, client_as: ClientAs, db: AsyncSession
) -> None:
    job = await make_job(db, name="x")
    anonymous = await client.get("/api/jobs")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "UNAUTHORIZED"
    customer = await client_as(operator(None, "server.read"))
    assert (await customer.get("/api/jobs")).status_code == 403
    assert (await customer.post(f"/api/jobs/{job.id}/retry")).status_code == 403
    reader = await client_as(operator(None, "job.read"))
    assert (await reader.get(f"/api/jobs/{job.id}")).status_code == 200
    assert (await reader.post(f"/api/jobs/{job.id}/retry")).status_code == 403


async def test_callers_see_only_their_tenants_jobs(client_as: ClientAs, db: AsyncSession) -> None:
    mine, theirs = await make_tenant(db, name="Mine"), await make_tenant(db, name="Theirs")
    own = await make_job(db, name="x", tenant=mine)
    other = await make_job(db, name="x", tenant=theirs)
    # Even "*" in a customer tenant (its owner) stays inside that tenant.
    tenant_owner = await client_as(operator(mine.id, "*"))
    listed = (await tenant_owner.get("/api/jobs")).json()["data"]
    assert [job["id"] for job in listed] == [own.id]
    assert (await tenant_owner.get(f"/api/jobs/{other.id}")).status_code == 404
    assert (await tenant_owner.post(f"/api/jobs/{other.id}/retry")).status_code == 404
    # Operators of the platform tenant see every tenant's jobs.
    platform = await platform_tenant(db)
    platform_operator = await client_as(operator(platform.id, "job.read"))
    assert len((await platform_operator.get("/api/jobs")).json()["data"]) == 2
