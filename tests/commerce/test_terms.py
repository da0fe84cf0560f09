"""Renewals, plan changes pro-rated to the second, expiry, and paid ports."""

from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.subscriptions import expiry
from hostplane.commerce.subscriptions.models import ServerSubscription
from hostplane.core.clock import utcnow
from hostplane.platform.jobs.worker import Worker
from hostplane.platform.webhooks.models import WebhookEvent
from tests.commerce.conftest import Shop, deploy_body


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _deployed(client: httpx.AsyncClient, shop: Shop, plan: dict[str, Any]) -> dict[str, Any]:
    deployed = await client.post(
        "/api/servers/deploy", json=deploy_body(plan), headers=shop.customer.headers
    )
    assert deployed.status_code == 201, deployed.text
    data: dict[str, Any] = deployed.json()["data"]
    return data


async def _activate(shop: Shop, subscription_id: str) -> None:
    """As if the install job had finished (no agent runs in these tests)."""
    async with shop.runtime.unit_of_work() as session:
        subscription = await session.get(ServerSubscription, subscription_id)
        assert subscription is not None
        subscription.status = "active"


async def _ends_in(shop: Shop, subscription_id: str, left: timedelta) -> None:
    """Move the term's end as if time had passed (tokens would expire if the clock moved)."""
    async with shop.runtime.unit_of_work() as session:
        subscription = await session.get(ServerSubscription, subscription_id)
        assert subscription is not None
        subscription.expires_at = utcnow() + left


async def test_renew_extends_by_one_period_and_charges_the_plan_currency(
    client: httpx.AsyncClient, shop: Shop
) -> None:
    plan = await shop.plan(client, currencyType="credits", price="2.50", periodDays=30)
    await shop.fund(shop.customer, "credits", 1000)
    data = await _deployed(client, shop, plan)
    server_id = data["serverId"]
    provisioning = await client.post(
        f"/api/servers/{server_id}/renew", headers=shop.customer.headers
    )
    assert provisioning.status_code == 409
    await _activate(shop, data["subscription"]["id"])

    renewed = await client.post(f"/api/servers/{server_id}/renew", headers=shop.customer.headers)
    assert renewed.status_code == 200, renewed.text
    out = renewed.json()["data"]
    assert out["charged"] == 2.5 and out["currencyType"] == "credits"
    assert _at(out["expiresAt"]) - _at(data["expiresAt"]) == timedelta(days=30)
    assert (await shop.balances(shop.customer)).credits == 1000 - 250 - 250
    # Someone else's server: 404 as for any server they cannot see.
    other = await client.post(f"/api/servers/{server_id}/renew", headers=shop.other.headers)
    assert other.status_code == 404


async def test_renew_refuses_a_short_balance_and_servers_without_plan(
    client: httpx.AsyncClient, db: AsyncSession, shop: Shop
) -> None:
    plan = await shop.plan(client, price=60)
    await shop.fund(shop.customer, "coins", 100)
    data = await _deployed(client, shop, plan)
    await _activate(shop, data["subscription"]["id"])
    short = await client.post(
        f"/api/servers/{data['serverId']}/renew", headers=shop.customer.headers
    )
    assert short.status_code == 402
    detail = await client.get(f"/api/servers/{data['serverId']}", headers=shop.customer.headers)
    assert detail.json()["data"]["expiresAt"] == data["expiresAt"]
    from tests.support.infra import make_server

    plain = await make_server(
        db, tenant=shop.tenant, owner=shop.customer.user, node=shop.node, template=shop.template
    )
    no_plan = await client.post(f"/api/servers/{plain.id}/renew", headers=shop.customer.headers)
    assert no_plan.status_code == 409 and no_plan.json()["error"]["code"] == "NO_PLAN"
    listed = (await client.get("/api/servers", headers=shop.customer.headers)).json()["data"]
    assert {s["id"]: s["plan"] for s in listed}[plain.id] is None


async def test_upgrade_charges_the_difference_for_the_remaining_seconds(
    client: httpx.AsyncClient, shop: Shop
) -> None:
    small = await shop.plan(client, name="Small", price=300, periodDays=30)
    big = await shop.plan(
        client,
        name="Big",
        price=900,
        periodDays=30,
        resources={"memoryMb": 2048, "cpuCores": 2, "diskMb": 4000, "databases": 3},
    )
    await shop.fund(shop.customer, "coins", 1000)
    data = await _deployed(client, shop, small)
    await _activate(shop, data["subscription"]["id"])
    # Half the term is left: it costs (900 - 300) / 2 = 300 coins more.
    await _ends_in(shop, data["subscription"]["id"], timedelta(days=15))
    upgraded = await client.post(
        f"/api/servers/{data['serverId']}/upgrade",
        json={"planId": big["id"]},
        headers=shop.customer.headers,
    )
    assert upgraded.status_code == 200, upgraded.text
    out = upgraded.json()["data"]
    assert out["plan"] == "Big" and out["charged"] in (299, 300, 301) and out["credited"] == 0
    assert out["limitsApplied"] == "next_start"
    assert (out["allocatedMemoryMb"], out["allocatedCpuCores"], out["databaseLimit"]) == (
        2048,
        2.0,
        3,
    )
    assert _at(out["expiresAt"]) - utcnow() <= timedelta(days=15)
    assert (await shop.balances(shop.customer)).coins == 1000 - 300 - out["charged"]
    detail = await client.get(f"/api/servers/{data['serverId']}", headers=shop.customer.headers)
    assert detail.json()["data"]["plan"] == "Big"

    # And back down with a third of the term left: 1/3 of 600 comes back.
    await _ends_in(shop, data["subscription"]["id"], timedelta(days=10))
    down = await client.post(
        f"/api/servers/{data['serverId']}/upgrade",
        json={"planId": small["id"]},
        headers=shop.customer.headers,
    )
    assert down.status_code == 200, down.text
    assert down.json()["data"]["charged"] == 0
    assert down.json()["data"]["credited"] in (199, 200, 201)
    same = await client.post(
        f"/api/servers/{data['serverId']}/upgrade",
        json={"planId": small["id"]},
        headers=shop.customer.headers,
    )
    assert same.status_code == 400


async def test_expiry_suspends_then_deletes_and_a_renewal_in_the_grace_unsuspends(
    client: httpx.AsyncClient, db: AsyncSession, shop: Shop
) -> None:
    shop.runtime.settings.billing.expiry_grace_hours = 48
    hooked = await client.post(
        "/api/webhooks",
        json={"url": "https://hooks.example.com/in", "events": ["subscription.*"]},
        headers=shop.operator.headers,
    )
    assert hooked.status_code == 201, hooked.text
    plan = await shop.plan(client, price=10, periodDays=1)
    await shop.fund(shop.customer, "coins", 100)
    kept = await _deployed(client, shop, plan)
    dropped = await _deployed(client, shop, plan)
    for data in (kept, dropped):
        await _activate(shop, data["subscription"]["id"])
    worker = Worker(shop.runtime)

    async def sweep() -> None:
        async with shop.runtime.unit_of_work() as session:
            await expiry.sweep(session, shop.runtime.settings.billing)
        await worker.run_until_idle()

    for data in (kept, dropped):
        await _ends_in(shop, data["subscription"]["id"], -timedelta(minutes=1))
    await sweep()
    await sweep()  # a second sweep queues nothing twice
    for data in (kept, dropped):
        server = await client.get(f"/api/servers/{data['serverId']}", headers=shop.customer.headers)
        assert server.json()["data"]["status"] == "suspended"
    renewed = await client.post(
        f"/api/servers/{kept['serverId']}/renew", headers=shop.customer.headers
    )
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["data"]["status"] == "stopped"
    # Renewed late: one period from now, not from the end that passed.
    assert _at(renewed.json()["data"]["expiresAt"]) > utcnow() + timedelta(hours=23)

    await _ends_in(shop, dropped["subscription"]["id"], -timedelta(hours=48, minutes=1))
    await sweep()
    gone = await client.get(f"/api/servers/{dropped['serverId']}", headers=shop.customer.headers)
    assert gone.status_code == 404
    followed = await client.get(
        f"/api/subscriptions/{dropped['subscription']['id']}", headers=shop.customer.headers
    )
    assert followed.json()["data"]["status"] == "ended"
    still = await client.get(f"/api/servers/{kept['serverId']}", headers=shop.customer.headers)
    assert still.status_code == 200 and still.json()["data"]["status"] == "stopped"
    # Each transition once, and to webhooks: two expiries, one renewal, one end.
    await db.commit()
    sent = (await db.scalars(select(WebhookEvent.type))).all()
    assert sorted(
        t
        for t in sent
        if t in ("subscription.expired", "subscription.renewed", "subscription.ended")
    ) == [
        "subscription.ended",
        "subscription.expired",
        "subscription.expired",
        "subscription.renewed",
    ]
    await db.commit()


async def test_an_extra_port_is_charged_at_the_configured_price(
    client: httpx.AsyncClient, db: AsyncSession, shop: Shop
) -> None:
    plan = await shop.plan(client, price=10)
    await shop.fund(shop.customer, "coins", 100)
    data = await _deployed(client, shop, plan)
    route = f"/api/servers/{data['serverId']}/network/allocations"
    free = await client.post(route, headers=shop.customer.headers)
    assert free.status_code == 201, free.text
    assert free.json()["data"]["charged"] == 0
    priced = await client.patch(
        "/api/admin/config",
        json={"prices": {"extraAllocation": {"coins": 25, "credits": 1.5}}},
        headers=shop.operator.headers,
    )
    assert priced.status_code == 200, priced.text
    paid = await client.post(route, headers=shop.customer.headers)
    assert paid.status_code == 201, paid.text
    assert paid.json()["data"]["charged"] == 25 and paid.json()["data"]["currencyType"] == "coins"
    assert (await shop.balances(shop.customer)).coins == 100 - 10 - 25
    for _ in range(2):
        await client.post(route, headers=shop.customer.headers)
    short = await client.post(route, headers=shop.customer.headers)
    assert short.status_code == 402
    ports = await client.get(
        f"/api/servers/{data['serverId']}/network", headers=shop.customer.headers
    )
    assert len(ports.json()["data"]) == 1 + 1 + 1 + 2


async def test_free_coins_to_premium_credits_credits_the_coins_and_charges_credits(
    client: httpx.AsyncClient, shop: Shop
) -> None:
    free = await shop.plan(client, name="Free", price=60, periodDays=30)
    premium = await shop.plan(
        client, name="Premium", currencyType="credits", price="9.00", periodDays=30
    )
    await shop.fund(shop.customer, "coins", 60)
    await shop.fund(shop.customer, "credits", 2000)
    data = await _deployed(client, shop, free)
    await _activate(shop, data["subscription"]["id"])
    await _ends_in(shop, data["subscription"]["id"], timedelta(days=10))
    upgraded = await client.post(
        f"/api/servers/{data['serverId']}/upgrade",
        json={"planId": premium["id"]},
        headers=shop.customer.headers,
    )
    assert upgraded.status_code == 200, upgraded.text
    out = upgraded.json()["data"]
    # A third of the term: 20 coins back, 3.00 credits charged (to the second, rounded once).
    assert out["credited"] in (19, 20) and 2.99 <= out["charged"] <= 3.0
    balances = await shop.balances(shop.customer)
    assert balances.coins == out["credited"]
    assert balances.credits == 2000 - round(out["charged"] * 100)
    renewed = await client.post(
        f"/api/servers/{data['serverId']}/renew", headers=shop.customer.headers
    )
    assert renewed.json()["data"]["currencyType"] == "credits"
    assert renewed.json()["data"]["charged"] == 9.0


async def test_a_renewal_lifts_only_the_suspension_the_expiry_made(
    client: httpx.AsyncClient, shop: Shop
) -> None:
    plan = await shop.plan(client, price=5)
    await shop.fund(shop.customer, "coins", 100)
    data = await _deployed(client, shop, plan)
    await _activate(shop, data["subscription"]["id"])
    suspended = await client.post(
        f"/api/admin/servers/{data['serverId']}/suspend",
        json={"reason": "abuse"},
        headers=shop.operator.headers,
    )
    assert suspended.status_code == 200, suspended.text
    await _ends_in(shop, data["subscription"]["id"], -timedelta(minutes=1))
    async with shop.runtime.unit_of_work() as session:
        await expiry.sweep(session, shop.runtime.settings.billing)
    await Worker(shop.runtime).run_until_idle()
    renewed = await client.post(
        f"/api/servers/{data['serverId']}/renew", headers=shop.customer.headers
    )
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["data"]["status"] == "suspended"
    assert renewed.json()["data"]["subscription"]["status"] == "active"
