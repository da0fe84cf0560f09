"""The plan catalogue: public listing, operator CRUD, prices in minor units."""

import httpx

from tests.commerce.conftest import Shop


async def test_public_catalogue_shows_plans_on_sale_with_their_currency(
    client: httpx.AsyncClient, shop: Shop
) -> None:
    coins = await shop.plan(client, name="Free", price=100)
    credits = await shop.plan(
        client,
        name="Premium",
        currencyType="credits",
        price="4.99",
        periodDays=7,
        resources={
            "memoryMb": 2048,
            "cpuCores": 2,
            "diskMb": 5000,
            "databases": 2,
            "backups": 3,
            "allocations": 2,
        },
        placement={"nodeIds": [shop.node.id]},
    )
    retired = await shop.plan(client, name="Old", active=False)
    assert coins["price"] == 100 and coins["priceMinor"] == 100 and coins["currency"] == "COINS"
    assert credits["price"] == 4.99 and credits["priceMinor"] == 499
    assert credits["currency"] == "USD"

    listed = await client.get("/api/catalog/plans")
    assert listed.status_code == 200, listed.text
    by_name = {p["name"]: p for p in listed.json()["data"]}
    assert set(by_name) == {"Free", "Premium"}
    premium = by_name["Premium"]
    assert premium["currencyType"] == "credits"
    assert premium["periodDays"] == 7
    assert premium["resources"] == {
        "memoryMb": 2048,
        "cpuCores": 2.0,
        "diskMb": 5000,
        "databases": 2,
        "backups": 3,
        "allocations": 2,
    }
    assert premium["template"] == {"id": shop.template.id, "name": shop.template.name}
    assert premium["placement"] == {"locationIds": [], "nodeIds": [shop.node.id]}
    # A customer sees the same shop; operators see retired plans too.
    mine = await client.get("/api/catalog/plans", headers=shop.customer.headers)
    assert {p["name"] for p in mine.json()["data"]} == {"Free", "Premium"}
    everything = await client.get("/api/admin/plans", headers=shop.operator.headers)
    assert retired["id"] in {p["id"] for p in everything.json()["data"]}
    unknown = await client.get("/api/catalog/plans", params={"tenant": "nope"})
    assert unknown.status_code == 404


async def test_operators_manage_plans_and_customers_cannot(
    client: httpx.AsyncClient, shop: Shop
) -> None:
    plan = await shop.plan(client)
    base = f"/api/admin/plans/{plan['id']}"
    assert (await client.get(base, headers=shop.customer.headers)).status_code == 403
    refused = await client.put(base, json={"price": 1}, headers=shop.customer.headers)
    assert refused.status_code == 403
    changed = await client.put(
        base,
        json={"currencyType": "credits", "price": "2.50", "active": False},
        headers=shop.operator.headers,
    )
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert (data["currencyType"], data["price"], data["priceMinor"], data["active"]) == (
        "credits",
        2.5,
        250,
        False,
    )
    # Changing the currency without a price in it is refused.
    no_price = await client.put(base, json={"currencyType": "coins"}, headers=shop.operator.headers)
    assert no_price.status_code == 400
    assert (await client.delete(base, headers=shop.operator.headers)).status_code == 200
    assert (await client.get(base, headers=shop.operator.headers)).status_code == 404


async def test_bad_prices_and_references_are_refused(client: httpx.AsyncClient, shop: Shop) -> None:
    body = {
        "name": "Bad",
        "currencyType": "coins",
        "price": "1.5",
        "resources": {"memoryMb": 512, "cpuCores": 1, "diskMb": 1000},
        "templateId": shop.template.id,
    }
    fractional = await client.post("/api/admin/plans", json=body, headers=shop.operator.headers)
    assert fractional.status_code == 400
    assert fractional.json()["error"]["code"] == "VALIDATION_ERROR"
    cents = body | {"currencyType": "credits", "price": "1.005"}
    assert (
        await client.post("/api/admin/plans", json=cents, headers=shop.operator.headers)
    ).status_code == 400
    ghost = body | {"price": 1, "templateId": "01nosuchtemplate000000000"}
    assert (
        await client.post("/api/admin/plans", json=ghost, headers=shop.operator.headers)
    ).status_code == 404
    nowhere = body | {"price": 1, "placement": {"nodeIds": ["01nosuchnode0000000000000"]}}
    assert (
        await client.post("/api/admin/plans", json=nowhere, headers=shop.operator.headers)
    ).status_code == 404
