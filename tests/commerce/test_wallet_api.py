"""``/api/economy/wallet``, ``/transactions``, ``/api/billing/convert`` and the
admin balance route, through real logins."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.identity import logged_in


async def _adjust(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    user_id: str,
    amount: object,
    currency: str = "coins",
    *,
    key: str | None = None,
) -> httpx.Response:
    headers = admin | ({"Idempotency-Key": key} if key else {})
    return await client.post(
        f"/api/admin/users/{user_id}/balance",
        json={"amount": amount, "currency": currency, "reason": "goodwill for the outage"},
        headers=headers,
    )


async def test_a_new_wallet_is_empty_and_me_shows_it(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    user = await logged_in(client, db)
    wallet = (await client.get("/api/economy/wallet", headers=user.headers)).json()["data"]
    assert wallet == {"coins": 0, "credits": 0, "creditsCurrency": "USD"}
    me = (await client.get("/api/auth/me", headers=user.headers)).json()["data"]
    assert me["wallet"] == wallet
    anonymous = await client.get("/api/economy/wallet")
    assert anonymous.status_code == 401


async def test_an_operator_adjusts_a_balance_never_below_zero_and_it_is_audited(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="owner")
    user = await logged_in(client, db)
    added = await _adjust(client, admin.headers, user.user.id, "12.50", "credits")
    assert added.status_code == 200, added.text
    assert added.json()["data"]["wallet"]["credits"] == 12.5
    taken = await _adjust(client, admin.headers, user.user.id, -2.5, "credits")
    assert taken.json()["data"]["wallet"]["credits"] == 10
    overdraw = await _adjust(client, admin.headers, user.user.id, "-10.01", "credits")
    assert overdraw.status_code == 402
    assert overdraw.json()["error"]["code"] == "INSUFFICIENT_FUNDS"
    too_precise = await _adjust(client, admin.headers, user.user.id, "0.001", "credits")
    assert too_precise.status_code == 400
    assert too_precise.json()["error"]["details"]["fields"][0]["field"] == "amount"
    fractional_coins = await _adjust(client, admin.headers, user.user.id, "1.5", "coins")
    assert fractional_coins.status_code == 400
    missing = await _adjust(client, admin.headers, "01nosuchuser0000000000000", 5)
    assert missing.status_code == 404
    # A customer may not adjust anyone's balance, their own included.
    forbidden = await _adjust(client, user.headers, user.user.id, 5)
    assert forbidden.status_code == 403

    wallet = (await client.get("/api/economy/wallet", headers=user.headers)).json()["data"]
    assert wallet["credits"] == 10
    audit = (
        await client.get("/api/audit", params={"type": "wallet.adjust"}, headers=admin.headers)
    ).json()["data"]
    assert len(audit) == 2
    assert {entry["metadata"]["reason"] for entry in audit} == {"goodwill for the outage"}


async def test_the_statement_lists_entries_newest_first_with_filters(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="owner")
    user = await logged_in(client, db)
    await _adjust(client, admin.headers, user.user.id, 100)
    await _adjust(client, admin.headers, user.user.id, "3.25", "credits")
    await _adjust(client, admin.headers, user.user.id, -40)
    listed = (await client.get("/api/economy/transactions", headers=user.headers)).json()
    assert listed["pagination"]["total"] == 3
    lines = listed["data"]
    assert [(line["currency"], line["amount"]) for line in lines] == [
        ("coins", -40),
        ("credits", 3.25),
        ("coins", 100),
    ]
    assert lines[0]["balanceAfter"] == 60 and lines[0]["kind"] == "admin.adjustment"
    coins = (
        await client.get(
            "/api/economy/transactions", params={"currency": "coins"}, headers=user.headers
        )
    ).json()
    assert coins["pagination"]["total"] == 2
    none = (
        await client.get(
            "/api/economy/transactions", params={"kind": "reward.daily"}, headers=user.headers
        )
    ).json()
    assert none["data"] == [] and none["pagination"]["total"] == 0
    bad = await client.get(
        "/api/economy/transactions", params={"currency": "gold"}, headers=user.headers
    )
    assert bad.status_code == 400
    # Another user's statement is their own.
    other = await logged_in(client, db)
    theirs = (await client.get("/api/economy/transactions", headers=other.headers)).json()
    assert theirs["data"] == []


async def test_credits_convert_to_coins_only_and_keys_replay(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="owner")
    user = await logged_in(client, db)
    await _adjust(client, admin.headers, user.user.id, 5, "credits")
    keyed = user.headers | {"Idempotency-Key": "convert-1"}
    first = await client.post("/api/billing/convert", json={"credits": "1.25"}, headers=keyed)
    assert first.status_code == 200, first.text
    data = first.json()["data"]
    assert data["coinsReceived"] == 125 and data["rate"] == 100
    assert data["wallet"] == {"coins": 125, "credits": 3.75, "creditsCurrency": "USD"}
    again = await client.post("/api/billing/convert", json={"credits": "1.25"}, headers=keyed)
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    reused = await client.post("/api/billing/convert", json={"credits": "2"}, headers=keyed)
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    wallet = (await client.get("/api/economy/wallet", headers=user.headers)).json()["data"]
    assert wallet["coins"] == 125 and wallet["credits"] == 3.75

    short = await client.post("/api/billing/convert", json={"credits": 4}, headers=user.headers)
    assert short.status_code == 402
    tiny = await client.post(
        "/api/billing/convert", json={"credits": "0.001"}, headers=user.headers
    )
    assert tiny.status_code == 400
    # There is no way back: the body refuses anything but credits.
    back = await client.post("/api/billing/convert", json={"coins": 100}, headers=user.headers)
    assert back.status_code == 400


async def test_concurrent_requests_under_one_key_move_money_once(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="owner")
    user = await logged_in(client, db)
    answers = await asyncio.gather(
        *(_adjust(client, admin.headers, user.user.id, 7, key="bonus-7") for _ in range(8))
    )
    assert {answer.status_code for answer in answers} == {200}
    assert len({answer.json()["data"]["transactionId"] for answer in answers}) == 1
    wallet = (await client.get("/api/economy/wallet", headers=user.headers)).json()["data"]
    assert wallet["coins"] == 7
