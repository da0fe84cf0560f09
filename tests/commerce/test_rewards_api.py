"""``/api/economy/earn/daily`` and ``/api/economy/earn/referral``."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.rewards import service as rewards
from hostplane.commerce.rewards.models import DailyReward
from hostplane.core.runtime import Runtime
from tests.support.identity import logged_in


async def _age_last_claim(db: AsyncSession, user_id: str, hours: float) -> None:
    await db.commit()
    state = await db.scalar(select(DailyReward).where(DailyReward.user_id == user_id))
    assert state is not None and state.last_claimed_at is not None
    state.last_claimed_at -= timedelta(hours=hours)
    await db.commit()


async def _configure(client: httpx.AsyncClient, owner: dict[str, str], **economy: object) -> None:
    changed = await client.patch("/api/admin/config", json={"economy": economy}, headers=owner)
    assert changed.status_code == 200, changed.text


async def test_the_daily_reward_pays_once_a_day_and_a_streak_adds_a_bonus(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await logged_in(client, db, role="owner")
    await _configure(client, owner.headers, dailyRewardCoins=20, dailyStreakBonusCoins=5)
    user = await logged_in(client, db)
    first = await client.post("/api/economy/earn/daily", headers=user.headers)
    assert first.status_code == 200, first.text
    data = first.json()["data"]
    assert data["coins"] == 20 and data["streak"] == 1 and data["wallet"]["coins"] == 20

    again = await client.post("/api/economy/earn/daily", headers=user.headers)
    assert again.status_code == 409
    error = again.json()["error"]
    assert error["code"] == "ALREADY_CLAIMED"
    assert error["details"]["nextClaimAt"][:16] == data["nextClaimAt"][:16]

    await _age_last_claim(db, user.user.id, 25)
    second = (await client.post("/api/economy/earn/daily", headers=user.headers)).json()["data"]
    assert second["streak"] == 2 and second["coins"] == 25
    # A missed day breaks the streak.
    await _age_last_claim(db, user.user.id, 49)
    third = (await client.post("/api/economy/earn/daily", headers=user.headers)).json()["data"]
    assert third["streak"] == 1 and third["coins"] == 20
    statement = (
        await client.get(
            "/api/economy/transactions", params={"kind": "reward.daily"}, headers=user.headers
        )
    ).json()
    assert [line["amount"] for line in statement["data"]] == [20, 25, 20]


async def test_racing_daily_claims_pay_one(client: httpx.AsyncClient, db: AsyncSession) -> None:
    user = await logged_in(client, db)
    answers = await asyncio.gather(
        *(client.post("/api/economy/earn/daily", headers=user.headers) for _ in range(10))
    )
    assert sorted(answer.status_code for answer in answers) == [200] + [409] * 9
    wallet = (await client.get("/api/economy/wallet", headers=user.headers)).json()["data"]
    assert wallet["coins"] == 10


async def test_a_referral_pays_both_sides_once_on_the_first_credit_purchase(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    referrer = await logged_in(client, db)
    newcomer = await logged_in(client, db)
    code = (await client.get("/api/economy/earn/referral", headers=referrer.headers)).json()[
        "data"
    ]["code"]
    same = (await client.post("/api/economy/earn/referral", headers=referrer.headers)).json()
    assert same["data"]["code"] == code

    own = await client.post(
        "/api/economy/earn/referral", json={"code": code}, headers=referrer.headers
    )
    assert own.status_code == 400
    unknown = await client.post(
        "/api/economy/earn/referral", json={"code": "NOSUCHCODE"}, headers=newcomer.headers
    )
    assert unknown.status_code == 404
    claimed = await client.post(
        "/api/economy/earn/referral", json={"code": code.lower()}, headers=newcomer.headers
    )
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["data"]["referredBy"] == referrer.user.id
    assert claimed.json()["data"]["referralStatus"] == "pending"
    twice = await client.post(
        "/api/economy/earn/referral", json={"code": code}, headers=newcomer.headers
    )
    assert twice.status_code == 409
    # The referrer cannot claim the newcomer's code back.
    their_code = claimed.json()["data"]["code"]
    mutual = await client.post(
        "/api/economy/earn/referral", json={"code": their_code}, headers=referrer.headers
    )
    assert mutual.status_code == 400

    # Nothing is paid until the newcomer buys credits.
    wallet = (await client.get("/api/economy/wallet", headers=referrer.headers)).json()["data"]
    assert wallet["coins"] == 0
    for _ in range(3):
        async with runtime.unit_of_work() as session:
            await rewards.note_credit_purchase(
                session, tenant_id=newcomer.user.tenant_id, user_id=newcomer.user.id
            )
    summary = (await client.get("/api/economy/earn/referral", headers=referrer.headers)).json()
    assert summary["data"]["referralsCleared"] == 1 and summary["data"]["coinsEarned"] == 100
    mine = (await client.get("/api/economy/wallet", headers=referrer.headers)).json()["data"]
    theirs = (await client.get("/api/economy/wallet", headers=newcomer.headers)).json()["data"]
    assert mine["coins"] == 100 and theirs["coins"] == 50


async def test_a_referral_may_clear_at_once_when_configured(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await logged_in(client, db, role="owner")
    await _configure(client, owner.headers, referralClearsOn="claim", referralReferredCoins=0)
    referrer = await logged_in(client, db)
    newcomer = await logged_in(client, db)
    code = (await client.get("/api/economy/earn/referral", headers=referrer.headers)).json()[
        "data"
    ]["code"]
    claimed = await client.post(
        "/api/economy/earn/referral", json={"code": code}, headers=newcomer.headers
    )
    assert claimed.json()["data"]["referralStatus"] == "cleared"
    mine = (await client.get("/api/economy/wallet", headers=referrer.headers)).json()["data"]
    theirs = (await client.get("/api/economy/wallet", headers=newcomer.headers)).json()["data"]
    assert mine["coins"] == 100 and theirs["coins"] == 0
