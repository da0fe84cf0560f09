"""``/api/admin/config``: the runtime configuration, its validation, audit and hot reload."""

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.app import build_runtime, create_app
from hostplane.core.config import RateLimitSettings
from hostplane.core.ids import new_id
from hostplane.core.runtime import Runtime
from hostplane.platform.admin import live
from hostplane.platform.admin.models import PlatformConfig
from hostplane.platform.audit.models import AuditLog
from tests.conftest import make_settings
from tests.support.identity import logged_in, other_tenant, platform_tenant
from tests.support.services import require_redis


async def test_defaults_come_from_the_static_settings(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await logged_in(client, db, tenant=await platform_tenant(db), role="owner")
    response = await client.get("/api/admin/config", headers=owner.headers)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["version"] == 0
    assert data["maintenance"]["enabled"] is False
    assert data["registration"] == {"open": True}
    # The test settings raise the limits; the configuration starts from them.
    assert data["rateLimits"] == {"auth": "10000/minute", "default": "10000/minute"}
    assert data["prices"]["extraAllocation"] == {"coins": 0, "credits": 0.0}
    assert data["defaultLimits"] == {"memoryMb": 1024, "cpuCores": 1.0, "diskMb": 10240}


async def test_a_patch_changes_only_what_it_names_is_stored_audited_and_versioned(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await logged_in(client, db, tenant=await platform_tenant(db), role="owner")
    response = await client.patch(
        "/api/admin/config",
        json={"prices": {"extraAllocation": {"coins": 50, "credits": 1.25}}},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["version"] == 1
    assert data["prices"]["extraAllocation"] == {"coins": 50, "credits": 1.25}
    assert data["prices"]["extraDatabase"] == {"coins": 0, "credits": 0.0}
    assert data["updatedByUserId"] == owner.user.id

    second = await client.patch(
        "/api/admin/config",
        json={"prices": {"extraAllocation": {"coins": 60}}, "defaultLimits": {"memoryMb": 2048}},
        headers=owner.headers,
    )
    data = second.json()["data"]
    assert data["version"] == 2
    # credits kept from the first change
    assert data["prices"]["extraAllocation"] == {"coins": 60, "credits": 1.25}
    assert data["defaultLimits"]["memoryMb"] == 2048

    await db.commit()
    row = await db.get(PlatformConfig, "global")
    assert row is not None
    assert row.version == 2
    # Stored exactly: a decimal string, never a float.
    assert row.overrides["prices"]["extra_allocation"] == {"coins": 60, "credits": "1.25"}
    entries = (
        await db.scalars(
            select(AuditLog).where(AuditLog.action == "config.update").order_by(AuditLog.created_at)
        )
    ).all()
    assert [entry.meta["version"] for entry in entries] == [1, 2]
    assert entries[1].meta["changes"] == {
        "prices": {"extra_allocation": {"coins": 60}},
        "default_limits": {"memory_mb": 2048},
    }
    assert entries[0].actor_id == owner.user.id

    public = await client.get("/api/v1/settings/system/config")
    assert public.status_code == 200
    assert public.json()["data"]["prices"]["extraAllocation"]["coins"] == 60
    assert public.json()["data"]["registrationOpen"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rateLimits": {"auth": "lots"}}, "rateLimits.auth"),
        ({"rateLimits": {"default": "0/minute"}}, "rateLimits.default"),
        ({"prices": {"extraDatabase": {"credits": 1.234}}}, "prices.extraDatabase.credits"),
        ({"prices": {"extraDatabase": {"coins": -1}}}, "prices.extraDatabase.coins"),
        ({"maintenance": {"message": ""}}, "maintenance.message"),
        ({"maintenance": {"enabled": None}}, "maintenance.enabled"),
        ({"maintenance": {"retryAfterSeconds": 0}}, "maintenance.retryAfterSeconds"),
        ({"defaultLimits": {"cpuCores": 0}}, "defaultLimits.cpuCores"),
        ({"registration": {"closed": True}}, "registration.closed"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_bad_settings_are_refused_naming_the_field(
    client: httpx.AsyncClient, db: AsyncSession, body: dict[str, object], field: str
) -> None:
    owner = await logged_in(client, db, tenant=await platform_tenant(db), role="owner")
    response = await client.patch("/api/admin/config", json=body, headers=owner.headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    named = {item["field"] for item in error["details"]["fields"]}
    snake = {
        "rateLimits": "rate_limits",
        "extraDatabase": "extra_database",
        "retryAfterSeconds": "retry_after_seconds",
        "defaultLimits": "default_limits",
        "cpuCores": "cpu_cores",
    }
    spelled = {field, ".".join(snake.get(part, part) for part in field.split("."))}
    assert named & spelled, named
    await db.commit()
    assert await db.get(PlatformConfig, "global") is None, "nothing was stored"


async def test_only_the_platform_tenant_changes_the_platform_configuration(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    await platform_tenant(db)
    foreign_owner = await logged_in(client, db, tenant=await other_tenant(db), role="owner")
    response = await client.patch(
        "/api/admin/config", json={"registration": {"open": False}}, headers=foreign_owner.headers
    )
    assert response.status_code == 403, response.text
    # It may read it (the prices and limits its customers see).
    assert (await client.get("/api/admin/config", headers=foreign_owner.headers)).status_code == 200


async def test_closing_registration_applies_at_once(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await logged_in(client, db, tenant=await platform_tenant(db), role="owner")
    closed = await client.patch(
        "/api/admin/config", json={"registration": {"open": False}}, headers=owner.headers
    )
    assert closed.status_code == 200, closed.text
    attempt = await client.post(
        "/api/auth/register", json={"email": "late@example.com", "password": "long enough 1"}
    )
    assert attempt.status_code == 403, attempt.text
    assert attempt.json()["error"]["code"] == "REGISTRATION_CLOSED"
    assert (await client.get("/api/v1/settings/system/config")).json()["data"][
        "registrationOpen"
    ] is False
    await client.patch(
        "/api/admin/config", json={"registration": {"open": True}}, headers=owner.headers
    )
    again = await client.post(
        "/api/auth/register", json={"email": "late@example.com", "password": "long enough 1"}
    )
    assert again.status_code == 200, again.text


async def test_rate_limits_change_without_a_restart(
    tmp_path: Path, db: AsyncSession, runtime: Runtime
) -> None:
    # The limiter counts for real here: the test settings' limits are only the start.
    settings = make_settings(
        tmp_path, rate_limits=RateLimitSettings(auth="10000/minute", default="10000/minute")
    )
    app = create_app(settings, runtime=runtime)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hostplane.test"
        ) as client,
    ):
        owner = await logged_in(client, db, tenant=await platform_tenant(db), role="owner")
        user = await logged_in(client, db)
        changed = await client.patch(
            "/api/admin/config", json={"rateLimits": {"default": "3/minute"}}, headers=owner.headers
        )
        assert changed.status_code == 200, changed.text
        answers = [
            (await client.get("/api/servers", headers=user.headers)).status_code for _ in range(4)
        ]
        assert answers == [200, 200, 200, 429]


async def _wait_for(check: object, within: float) -> float:
    """Seconds until ``check()`` holds; fails after ``within``."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if check():  # type: ignore[operator]
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise AssertionError(f"not applied within {within} s")


async def test_a_change_on_one_replica_is_applied_by_another_within_a_second(
    tmp_path: Path, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    """Two panel processes share a Redis bus: the second applies the change from the event."""
    redis_url = await require_redis()
    owner = await logged_in(client, db, tenant=await platform_tenant(db), role="owner")
    customer = await logged_in(client, db)
    settings = make_settings(tmp_path, redis_url=redis_url, event_channel_prefix=f"test-{new_id()}")
    runtimes = [build_runtime(settings) for _ in range(2)]
    replicas = [create_app(settings, runtime=r) for r in runtimes]
    async with (
        replicas[0].router.lifespan_context(replicas[0]),
        replicas[1].router.lifespan_context(replicas[1]),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=replicas[0]), base_url="http://first"
        ) as first,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=replicas[1]), base_url="http://second"
        ) as second,
    ):
        assert (await second.get("/api/servers", headers=customer.headers)).status_code == 200
        response = await first.patch(
            "/api/admin/config",
            json={"maintenance": {"enabled": True, "message": "Moving racks"}},
            headers=owner.headers,
        )
        assert response.status_code == 200, response.text
        took = await _wait_for(lambda: live.current(runtimes[1]).maintenance.enabled, 1.0)
        refused = await second.get("/api/servers", headers=customer.headers)
        assert refused.status_code == 503
        assert refused.json()["error"]["message"] == "Moving racks"
        print(f"config applied on the other replica after {took * 1000:.0f} ms")  # noqa: T201


async def test_a_missed_event_is_made_up_by_the_periodic_reread(
    tmp_path: Path,
    client: httpx.AsyncClient,
    db: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process on its own in-memory bus never hears the event: it re-reads the row."""
    monkeypatch.setattr(live, "REFRESH_SECONDS", 0.2)
    owner = await logged_in(client, db, tenant=await platform_tenant(db), role="owner")
    other = build_runtime(make_settings(tmp_path))
    other_app = create_app(other.settings, runtime=other)
    async with other_app.router.lifespan_context(other_app):
        assert live.current(other).registration.open is True
        response = await client.patch(
            "/api/admin/config", json={"registration": {"open": False}}, headers=owner.headers
        )
        assert response.status_code == 200, response.text
        await _wait_for(lambda: live.current(other).registration.open is False, 2.0)
    # The row is the truth: a direct change (a restore, say) is picked up the same way.
    async with other_app.router.lifespan_context(other_app):
        async with other.unit_of_work() as session:
            await session.execute(
                update(PlatformConfig).values(
                    version=PlatformConfig.version + 1,
                    overrides={"registration": {"open": True}},
                )
            )
        await _wait_for(lambda: live.current(other).registration.open is True, 2.0)


async def test_new_servers_get_the_configured_default_resources(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    from tests.support.infra import make_node, make_template

    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant, role="owner")
    node, _ = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    changed = await client.patch(
        "/api/admin/config",
        json={"defaultLimits": {"memoryMb": 768, "cpuCores": 0.5, "diskMb": 2048}},
        headers=owner.headers,
    )
    assert changed.status_code == 200, changed.text
    body = {
        "name": "defaults",
        "templateId": template.id,
        "nodeId": node.id,
        "environment": {"MEMORY": "768M"},
    }
    created = await client.post("/api/servers", json=body, headers=owner.headers)
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert (data["allocatedMemoryMb"], data["allocatedCpuCores"], data["allocatedDiskMb"]) == (
        768,
        0.5,
        2048,
    )
    explicit = await client.post(
        "/api/servers",
        json=body | {"name": "explicit", "allocatedMemoryMb": 256},
        headers=owner.headers,
    )
    assert explicit.json()["data"]["allocatedMemoryMb"] == 256
    assert explicit.json()["data"]["allocatedDiskMb"] == 2048
