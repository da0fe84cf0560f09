"""``/api/webhooks``: endpoints, secrets shown once, rotation, deliveries, redelivery, test."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.app import create_app
from hostplane.core.config import WebhookSettings
from hostplane.core.runtime import Runtime
from hostplane.platform.webhooks.models import WebhookEndpoint
from tests.conftest import make_settings, panel_runtime
from tests.platform.webhooks.helpers import deliver_all
from tests.support.identity import logged_in
from tests.support.webhooks import Answer, receiver


async def test_an_admin_creates_lists_changes_and_deletes_an_endpoint(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="admin")
    created = await client.post(
        "/api/webhooks",
        json={"url": "https://hooks.example.com/in", "events": ["server.created", "alert.*"]},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()["data"]
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint["enabled"] is True and endpoint["events"] == ["server.created", "alert.*"]
    # The secret is stored sealed, never in the clear.
    await db.commit()
    row = await db.get(WebhookEndpoint, endpoint["id"])
    assert row is not None and endpoint["secret"] not in row.secret_sealed

    listed = (await client.get("/api/webhooks", headers=admin.headers)).json()
    assert [item["id"] for item in listed["data"]] == [endpoint["id"]]
    assert "secret" not in listed["data"][0]
    one = (await client.get(f"/api/webhooks/{endpoint['id']}", headers=admin.headers)).json()
    assert "secret" not in one["data"] and one["data"]["url"] == "https://hooks.example.com/in"

    changed = await client.put(
        f"/api/webhooks/{endpoint['id']}",
        json={"events": ["*"], "enabled": False, "description": "ops"},
        headers=admin.headers,
    )
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert data["events"] == ["*"] and data["enabled"] is False
    assert data["disabledReason"] == "manual" and data["secret"] is None

    deleted = await client.delete(f"/api/webhooks/{endpoint['id']}", headers=admin.headers)
    assert deleted.status_code == 200
    missing = await client.get(f"/api/webhooks/{endpoint['id']}", headers=admin.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


async def test_bad_endpoints_are_refused_with_the_field(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="admin")
    for body in (
        {"url": "ftp://example.com/x", "events": ["server.created"]},
        {"url": "https://user:pw@example.com/x", "events": ["server.created"]},
        {"url": "https://example.com/x", "events": ["server.exploded"]},
        {"url": "https://example.com/x", "events": []},
        {"url": "https://example.com/x", "events": ["nothing.*"]},
        {"url": "https://example.com/x", "events": ["server.created"], "extra": 1},
    ):
        answer = await client.post("/api/webhooks", json=body, headers=admin.headers)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["code"] in ("VALIDATION_ERROR", "DESTINATION_REFUSED")


async def test_private_destinations_are_refused_unless_the_operator_allows_them(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, webhooks=WebhookSettings())
    async with panel_runtime(settings) as runtime:
        app = create_app(settings, runtime=runtime)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://hostplane.test") as client,
            runtime.unit_of_work() as db,
        ):
            admin = await logged_in(client, db, role="admin")
            for url in (
                "http://127.0.0.1:8080/x",
                "http://localhost/x",
                "http://10.1.2.3/x",
                "http://169.254.169.254/latest/meta-data",
                "http://[::1]/x",
                "http://[::ffff:127.0.0.1]/x",
            ):
                answer = await client.post(
                    "/api/webhooks", json={"url": url, "events": ["*"]}, headers=admin.headers
                )
                assert answer.status_code == 400, (url, answer.text)
                assert answer.json()["error"]["code"] == "DESTINATION_REFUSED"
            public = await client.post(
                "/api/webhooks",
                json={"url": "https://93.184.215.14/x", "events": ["*"]},
                headers=admin.headers,
            )
            assert public.status_code == 201, public.text


async def test_rotation_returns_a_new_secret_and_both_sign_for_a_day(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    admin = await logged_in(client, db, role="admin")
    async with receiver() as hook:
        created = (
            await client.post(
                "/api/webhooks", json={"url": hook.url, "events": ["*"]}, headers=admin.headers
            )
        ).json()["data"]
        rotated = await client.put(
            f"/api/webhooks/{created['id']}", json={"rotateSecret": True}, headers=admin.headers
        )
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["data"]["secret"]
        assert new_secret.startswith("whsec_") and new_secret != created["secret"]
        assert rotated.json()["data"]["previousSecretExpiresAt"] is not None

        # A receiver holding either secret verifies the same request.
        hook.secrets = [created["secret"], new_secret]
        sent = await client.post(f"/api/webhooks/{created['id']}/test", headers=admin.headers)
        assert sent.status_code == 202, sent.text
        await deliver_all(runtime)
        assert len(hook.received) == 1 and hook.received[0].verified
        assert len(hook.received[0].headers["webhook-signature"].split(" ")) == 2
        assert hook.received[0].payload["event"] == "webhook.test"


async def test_deliveries_show_every_attempt_and_can_be_redelivered(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    admin = await logged_in(client, db, role="admin")
    async with receiver(script=[Answer(500, "x" * 5000)]) as hook:
        created = (
            await client.post(
                "/api/webhooks",
                json={"url": hook.url, "events": ["user.created"]},
                headers=admin.headers,
            )
        ).json()["data"]
        hook.secrets = [created["secret"]]
        made = await client.post(
            "/api/users",
            json={"email": "new-person@example.com", "password": "long enough 1"},
            headers=admin.headers,
        )
        assert made.status_code == 201, made.text
        await deliver_all(runtime)

        page = (
            await client.get(f"/api/webhooks/{created['id']}/deliveries", headers=admin.headers)
        ).json()
        assert page["pagination"]["total"] == 1
        delivery = page["data"][0]
        assert delivery["eventType"] == "user.created" and delivery["status"] == "succeeded"
        assert [a["statusCode"] for a in delivery["attemptLog"]] == [500, 200]
        first = delivery["attemptLog"][0]
        assert len(first["responseBody"]) == 2048 and first["durationMs"] >= 0
        assert all(item.verified for item in hook.received)
        payload = hook.received[-1].payload
        assert payload["event"] == "user.created"
        assert payload["data"]["email"] == "new-person@example.com"
        assert payload["timestamp"].endswith("Z")

        again = await client.post(
            f"/api/webhooks/{created['id']}/deliveries/{delivery['id']}/redeliver",
            headers=admin.headers,
        )
        assert again.status_code == 202, again.text
        await deliver_all(runtime)
        assert len(hook.received) == 3
        # The same event, the same webhook-id: a receiver can tell it is a replay.
        assert hook.received[2].headers["webhook-id"] == hook.received[1].headers["webhook-id"]
        only_failed = (
            await client.get(
                f"/api/webhooks/{created['id']}/deliveries",
                params={"status": "failed"},
                headers=admin.headers,
            )
        ).json()
        assert only_failed["data"] == []

        unknown = await client.post(
            f"/api/webhooks/{created['id']}/deliveries/nope/redeliver", headers=admin.headers
        )
        assert unknown.status_code == 404


async def test_another_tenants_admin_sees_nothing(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    from tests.support.identity import other_tenant

    admin = await logged_in(client, db, role="admin")
    created = (
        await client.post(
            "/api/webhooks",
            json={"url": "https://hooks.example.com/in", "events": ["*"]},
            headers=admin.headers,
        )
    ).json()["data"]
    foreign = await logged_in(client, db, role="admin", tenant=await other_tenant(db))
    assert (await client.get("/api/webhooks", headers=foreign.headers)).json()["data"] == []
    for method, path in (
        ("GET", f"/api/webhooks/{created['id']}"),
        ("PUT", f"/api/webhooks/{created['id']}"),
        ("DELETE", f"/api/webhooks/{created['id']}"),
        ("GET", f"/api/webhooks/{created['id']}/deliveries"),
        ("POST", f"/api/webhooks/{created['id']}/test"),
    ):
        answer = await client.request(
            method, path, json={} if method == "PUT" else None, headers=foreign.headers
        )
        assert answer.status_code == 404, (method, path, answer.text)
    rows = (await db.scalars(select(WebhookEndpoint))).all()
    assert len(rows) == 1
