"""Servers bought with coins, end to end through ``hostplane up`` and HTTP only: an
operator prices a plan, a customer gets coins, deploys, sees the server installed and
running, renews, and the balance moves by the plan's price each time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.frontdoor import Deployment, embedded, eventually, wait_status
from tests.e2e.test_catalyst_flows import register
from tests.e2e.test_catalyst_flows import template_id as template_id  # a fixture

PRICE = 50


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with embedded(tmp_path_factory.mktemp("plans")) as running:
        yield running


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _coins(http: httpx.AsyncClient) -> int:
    wallet = await http.get("/api/economy/wallet")
    assert wallet.status_code == 200, wallet.text
    coins: int = wallet.json()["data"]["coins"]
    return coins


async def test_a_customer_buys_renews_and_pays_in_coins(
    deployment: Deployment, template_id: str
) -> None:
    async with deployment.operator() as ops:
        created = await ops.post(
            "/api/admin/plans",
            json={
                "name": "Coin Echo",
                "currencyType": "coins",
                "price": PRICE,
                "periodDays": 30,
                "resources": {"memoryMb": 128, "cpuCores": 1, "diskMb": 200},
                "templateId": template_id,
                "placement": {"nodeIds": [deployment.node_id]},
            },
        )
        assert created.status_code == 201, created.text
        plan: dict[str, Any] = created.json()["data"]
        user, token = await register(deployment)
        funded = await ops.post(
            f"/api/admin/users/{user['id']}/balance",
            json={"amount": 2 * PRICE + 20, "currency": "coins", "reason": "Welcome coins"},
        )
        assert funded.status_code in (200, 201), funded.text

    async with deployment.client(token) as http:
        assert await _coins(http) == 2 * PRICE + 20
        shop = await http.get("/api/catalog/plans")
        on_sale = {p["id"]: p for p in shop.json()["data"]}
        assert on_sale[plan["id"]]["currencyType"] == "coins"
        assert on_sale[plan["id"]]["price"] == PRICE

        deployed = await http.post(
            "/api/servers/deploy",
            json={"planId": plan["id"], "name": "coin-echo"},
            headers={"Idempotency-Key": "first-deploy"},
        )
        assert deployed.status_code == 201, deployed.text
        data = deployed.json()["data"]
        server_id, subscription_id = data["serverId"], data["subscription"]["id"]
        assert await _coins(http) == PRICE + 20

        async def active() -> dict[str, Any] | None:
            term = (await http.get(f"/api/subscriptions/{subscription_id}")).json()["data"]
            assert term["status"] in ("provisioning", "active"), term
            return term if term["status"] == "active" else None

        await eventually(active, what="the deployed server to be installed", timeout=120)
        assert await wait_status(http, server_id, "stopped") == "stopped"
        detail = (await http.get(f"/api/servers/{server_id}")).json()["data"]
        assert detail["plan"] == "Coin Echo" and detail["planId"] == plan["id"]
        assert detail["allocatedMemoryMb"] == 128
        started = await http.post(f"/api/servers/{server_id}/start")
        assert started.status_code == 200, started.text
        assert await wait_status(http, server_id, "running") == "running"

        renewed = await http.post(f"/api/servers/{server_id}/renew")
        assert renewed.status_code == 200, renewed.text
        assert _at(renewed.json()["data"]["expiresAt"]) - _at(data["expiresAt"]) == timedelta(
            days=30
        )
        assert await _coins(http) == 20
        short = await http.post(f"/api/servers/{server_id}/renew")
        assert short.status_code == 402, short.text
        assert await _coins(http) == 20
        listed = (await http.get("/api/servers")).json()["data"]
        assert [(s["id"], s["plan"]) for s in listed] == [(server_id, "Coin Echo")]
        assert (await http.post(f"/api/servers/{server_id}/stop")).status_code == 200
        await wait_status(http, server_id, "stopped")


async def test_from_registration_to_a_running_server_paid_with_the_daily_reward(
    deployment: Deployment, template_id: str
) -> None:
    async with deployment.operator() as ops:
        config = (await ops.get("/api/admin/config")).json()["data"]
        daily = config["economy"]["dailyRewardCoins"]
        assert daily > 0
        created = await ops.post(
            "/api/admin/plans",
            json={
                "name": "Free Tier",
                "currencyType": "coins",
                "price": daily,
                "periodDays": 1,
                "resources": {"memoryMb": 64, "cpuCores": 1, "diskMb": 100},
                "templateId": template_id,
                "placement": {"nodeIds": [deployment.node_id]},
            },
        )
        assert created.status_code == 201, created.text
        plan_id = created.json()["data"]["id"]

    _user, token = await register(deployment)
    async with deployment.client(token) as http:
        too_early = await http.post("/api/servers/deploy", json={"planId": plan_id, "name": "free"})
        assert too_early.status_code == 402, too_early.text
        claimed = await http.post("/api/economy/earn/daily")
        assert claimed.status_code == 200, claimed.text
        assert await _coins(http) == daily
        deployed = await http.post("/api/servers/deploy", json={"planId": plan_id, "name": "free"})
        assert deployed.status_code == 201, deployed.text
        server_id = deployed.json()["data"]["serverId"]
        subscription_id = deployed.json()["data"]["subscription"]["id"]
        assert await _coins(http) == 0

        async def installed() -> bool:
            term = (await http.get(f"/api/subscriptions/{subscription_id}")).json()["data"]
            assert term["status"] in ("provisioning", "active"), term
            return term["status"] == "active"

        await eventually(installed, what="the deployed server to be installed", timeout=120)
        assert await wait_status(http, server_id, "stopped") == "stopped"
        assert (await http.post(f"/api/servers/{server_id}/start")).status_code == 200
        assert await wait_status(http, server_id, "running") == "running"
        kinds = [
            line["kind"] for line in (await http.get("/api/economy/transactions")).json()["data"]
        ]
        assert kinds == ["server.deploy", "reward.daily"], kinds
        assert (await http.post(f"/api/servers/{server_id}/stop")).status_code == 200
        await wait_status(http, server_id, "stopped")
