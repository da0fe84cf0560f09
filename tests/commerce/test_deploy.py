"""Deploy: charge, place, install as one outcome; refunds when it cannot be."""

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.subscriptions.models import ServerSubscription
from hostplane.infra.servers.models import Server
from hostplane.platform.jobs.models import Job
from hostplane.platform.jobs.worker import Worker
from tests.commerce.conftest import Shop, deploy_body
from tests.support.infra import make_node


async def test_deploy_charges_the_plan_and_places_a_server_with_its_plan(
    client: httpx.AsyncClient, db: AsyncSession, shop: Shop
) -> None:
    plan = await shop.plan(client, name="Starter", price=100)
    await shop.fund(shop.customer, "coins", 250)
    deployed = await client.post(
        "/api/servers/deploy", json=deploy_body(plan), headers=shop.customer.headers
    )
    assert deployed.status_code == 201, deployed.text
    data = deployed.json()["data"]
    assert data["plan"] == "Starter" and data["planId"] == plan["id"]
    assert data["charged"] == 100 and data["subscription"]["status"] == "provisioning"
    assert (await shop.balances(shop.customer)).coins == 150

    server_id = data["serverId"]
    detail = (await client.get(f"/api/servers/{server_id}", headers=shop.customer.headers)).json()
    assert detail["data"]["plan"] == "Starter"
    assert detail["data"]["planId"] == plan["id"]
    assert detail["data"]["expiresAt"] == data["expiresAt"]
    assert detail["data"]["allocatedMemoryMb"] == 512
    assert detail["data"]["databaseLimit"] == 1
    listed = (await client.get("/api/servers", headers=shop.customer.headers)).json()["data"]
    assert [(s["id"], s["plan"]) for s in listed] == [(server_id, "Starter")]
    job = await db.scalar(select(Job).where(Job.type == "subscriptions.provision"))
    assert job is not None and job.args == {"subscription_id": data["subscription"]["id"]}
    followed = await client.get(
        f"/api/subscriptions/{data['subscription']['id']}", headers=shop.customer.headers
    )
    assert followed.status_code == 200 and followed.json()["data"]["serverId"] == server_id
    assert (
        await client.get(
            f"/api/subscriptions/{data['subscription']['id']}", headers=shop.other.headers
        )
    ).status_code == 404
    assert detail["data"]["name"] == "bought"
    # A plan something was bought on is retired, not deleted.
    kept = await client.delete(f"/api/admin/plans/{plan['id']}", headers=shop.operator.headers)
    assert kept.status_code == 409, kept.text


async def test_a_short_balance_is_402_and_nothing_happens(
    client: httpx.AsyncClient, db: AsyncSession, shop: Shop
) -> None:
    plan = await shop.plan(client, price=100)
    await shop.fund(shop.customer, "coins", 99)
    await shop.fund(shop.customer, "credits", 100_000)
    refused = await client.post(
        "/api/servers/deploy", json=deploy_body(plan), headers=shop.customer.headers
    )
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["code"] == "INSUFFICIENT_FUNDS"
    await db.commit()
    assert (await db.scalar(select(Server).where(Server.name == "bought"))) is None
    assert (await shop.balances(shop.customer)).coins == 99
    retired = await shop.plan(client, price=1, active=False)
    gone = await client.post(
        "/api/servers/deploy", json=deploy_body(retired), headers=shop.customer.headers
    )
    assert gone.status_code == 404


async def test_no_node_with_room_refunds_the_charge_and_says_why(
    client: httpx.AsyncClient, db: AsyncSession, shop: Shop
) -> None:
    small, _ = await make_node(db, tenant=shop.tenant, max_memory_mb=256, name="small")
    plan = await shop.plan(client, price=40, placement={"nodeIds": [small.id]})
    await shop.fund(shop.customer, "coins", 100)
    headers = shop.customer.headers | {"Idempotency-Key": "no-room"}
    refused = await client.post("/api/servers/deploy", json=deploy_body(plan), headers=headers)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "NO_CAPACITY" and error["details"]["refunded"] is True
    assert (await shop.balances(shop.customer)).coins == 100
    # The refusal committed (a charge and its refund): the same key gives it again.
    again = await client.post("/api/servers/deploy", json=deploy_body(plan), headers=headers)
    assert again.status_code == 409 and again.json() == refused.json()
    assert (await shop.balances(shop.customer)).coins == 100
    statement = await client.get("/api/economy/transactions", headers=shop.customer.headers)
    kinds = [line["kind"] for line in statement.json()["data"]]
    assert kinds.count("server.deploy") == 1 and kinds.count("refund") == 1, kinds
    await db.commit()
    subscription = await db.get(ServerSubscription, error["details"]["subscriptionId"])
    assert subscription is not None and subscription.status == "failed"
    assert subscription.server_id is None and subscription.failure_reason


async def test_an_install_that_fails_for_good_is_refunded_and_the_server_removed(
    client: httpx.AsyncClient, db: AsyncSession, shop: Shop
) -> None:
    # No agent answers for the node: every install attempt fails.
    shop.runtime.settings.billing.provision_attempts = 1
    plan = await shop.plan(client, price=100)
    await shop.fund(shop.customer, "coins", 100)
    deployed = await client.post(
        "/api/servers/deploy", json=deploy_body(plan), headers=shop.customer.headers
    )
    assert deployed.status_code == 201, deployed.text
    assert (await shop.balances(shop.customer)).coins == 0
    await Worker(shop.runtime).run_until_idle()
    assert (await shop.balances(shop.customer)).coins == 100
    subscription_id = deployed.json()["data"]["subscription"]["id"]
    followed = await client.get(
        f"/api/subscriptions/{subscription_id}", headers=shop.customer.headers
    )
    data = followed.json()["data"]
    assert data["status"] == "failed" and "could not be set up" in data["failureReason"]
    server = await client.get(
        f"/api/servers/{deployed.json()['data']['serverId']}", headers=shop.customer.headers
    )
    assert server.status_code == 404


async def test_a_repeated_deploy_with_the_same_key_buys_once(
    client: httpx.AsyncClient, db: AsyncSession, shop: Shop
) -> None:
    plan = await shop.plan(client, price=30)
    await shop.fund(shop.customer, "coins", 100)
    headers = shop.customer.headers | {"Idempotency-Key": "buy-once"}
    first = await client.post("/api/servers/deploy", json=deploy_body(plan), headers=headers)
    again = await client.post("/api/servers/deploy", json=deploy_body(plan), headers=headers)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert (await shop.balances(shop.customer)).coins == 70
    other_body = await client.post(
        "/api/servers/deploy", json=deploy_body(plan, name="another"), headers=headers
    )
    assert other_body.status_code == 409
    assert other_body.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
