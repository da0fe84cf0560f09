"""``/health``, ``/status`` and ``/metrics``."""

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.runtime import Runtime
from hostplane.platform.jobs import repository
from tests.support.factories import make_job


async def test_health_is_the_documented_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "hostplane-api"}


async def test_status_reports_version_uptime_and_dependencies(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    body = (await client.get("/status")).json()
    assert body["service"] == "hostplane-api"
    assert body["version"]
    assert isinstance(body["uptimeSeconds"], int)
    assert body["dependencies"] == {"database": "ok", "queue": "down"}, "no worker has reported in"
    assert body["status"] == "degraded"

    async with runtime.unit_of_work() as session:
        await repository.heartbeat(session, "worker-1")
    body = (await client.get("/status")).json()
    assert body["dependencies"] == {"database": "ok", "queue": "ok"}
    assert body["status"] == "ok"


async def test_status_is_503_when_the_database_is_down(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    original = runtime.engine
    runtime.engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        response = await client.get("/status")
    finally:
        await runtime.engine.dispose()
        runtime.engine = original
    assert response.status_code == 503
    assert response.json()["dependencies"]["database"] == "down"
    assert response.json()["status"] == "down"


async def test_metrics_count_requests_by_route_template_and_jobs_by_status(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    await make_job(db, name="a")
    await make_job(db, name="b")
    await client.get("/api/jobs/some-id-1")
    await client.get("/api/jobs/some-id-2")
    await client.get("/no/such/route")
    text = (await client.get("/metrics")).text
    assert (
        'hostplane_http_requests_total{method="GET",route="/api/jobs/{job_id}",status="401"} 2.0'
        in text
    )
    assert 'route="<unmatched>",status="404"' in text
    assert "some-id-1" not in text
    assert (
        'hostplane_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/jobs/{job_id}"}'
        in text
    )
    assert 'hostplane_jobs{status="queued"} 2.0' in text
    assert 'hostplane_jobs{status="failed"} 0.0' in text


async def test_openapi_and_docs_are_served(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    assert "/api/jobs/{job_id}/retry" in document["paths"]
    assert "ErrorEnvelope" in document["components"]["schemas"]
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
