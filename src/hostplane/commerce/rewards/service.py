"""The daily reward and referrals, each paid exactly once.

A daily claim is a conditional UPDATE of the user's reward row (``claims``
unchanged and the last claim 24 hours ago): of two racing claims one finds
the row changed and gets 409. The coins go under the ledger key
``reward.daily:{user}:{claim number}``, so even a retried request pays one
claim once. A referral's two payments are keyed by the referral and the side,
and the referral leaves ``pending`` by a conditional UPDATE too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.rewards.models import DailyReward, Referral, ReferralCode
from hostplane.commerce.wallet import service as wallet
from hostplane.core.clock import isoformat, utcnow
from hostplane.core.errors import Conflict, NotFound, ValidationFailed
from hostplane.platform.admin.schemas import Economy

DAY = timedelta(hours=24)
# A claim within two days of the last one keeps the streak going.
STREAK_WINDOW = timedelta(hours=48)
REWARDS = "rewards"
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are read aloud
CODE_LENGTH = 8


class AlreadyClaimed(Conflict):
    code = "ALREADY_CLAIMED"


@dataclass(frozen=True, slots=True)
class DailyResult:
    coins: int
    streak: int
    next_claim_at: datetime


async def claim_daily(
    session: AsyncSession, *, tenant_id: str, user_id: str, economy: Economy
) -> DailyResult:
    """Pay the daily reward, once per rolling 24 hours (409 with the next time)."""
    state = await _daily_state(session, tenant_id, user_id)
    now = utcnow()
    if state.last_claimed_at is not None and state.last_claimed_at > now - DAY:
        raise _already(state.last_claimed_at)
    keeps_streak = state.last_claimed_at is not None and state.last_claimed_at > now - STREAK_WINDOW
    streak = state.streak + 1 if keeps_streak else 1
    claim_number = state.claims + 1
    changed = await session.execute(
        update(DailyReward)
        .where(
            DailyReward.id == state.id,
            DailyReward.claims == state.claims,
            or_(DailyReward.last_claimed_at.is_(None), DailyReward.last_claimed_at <= now - DAY),
        )
        .values(last_claimed_at=now, claims=claim_number, streak=streak)
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        # Another claim won the race; it is the one paid.
        last = await session.scalar(
            select(DailyReward.last_claimed_at).where(DailyReward.id == state.id)
        )
        raise _already(last or now)
    bonus_days = min(streak, economy.daily_streak_max_days) - 1
    coins = economy.daily_reward_coins + economy.daily_streak_bonus_coins * bonus_days
    if coins > 0:
        await wallet.credit(
            session,
            tenant_id=tenant_id,
            user_id=user_id,
            currency="coins",
            amount=coins,
            kind="reward.daily",
            key=f"reward.daily:{user_id}:{claim_number}",
            source=REWARDS,
            reference=f"user:{user_id}",
            memo=f"Daily reward, day {streak} of a streak",
            actor_user_id=user_id,
        )
    return DailyResult(coins=coins, streak=streak, next_claim_at=now + DAY)


def _already(last: datetime) -> AlreadyClaimed:
    next_at = last + DAY
    return AlreadyClaimed(
        f"The daily reward was already claimed; the next claim opens at {isoformat(next_at)}",
        details={"nextClaimAt": isoformat(next_at)},
    )


async def _daily_state(session: AsyncSession, tenant_id: str, user_id: str) -> DailyReward:
    found = await session.scalar(select(DailyReward).where(DailyReward.user_id == user_id))
    if found is not None:
        return found
    state = DailyReward(tenant_id=tenant_id, user_id=user_id, claims=0, streak=0)
    try:
        async with session.begin_nested():
            session.add(state)
            await session.flush()
    except IntegrityError:
        found = await session.scalar(select(DailyReward).where(DailyReward.user_id == user_id))
        if found is None:
            raise
        return found
    return state


# --- referrals -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReferralSummary:
    code: str
    referred_by: str | None
    referral_status: str | None
    pending: int
    cleared: int
    coins_earned: int


async def own_code(session: AsyncSession, *, tenant_id: str, user_id: str) -> str:
    """The user's referral code, made on first request."""
    found = await session.scalar(select(ReferralCode.code).where(ReferralCode.user_id == user_id))
    if found is not None:
        return found
    for _ in range(5):
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        try:
            async with session.begin_nested():
                session.add(ReferralCode(tenant_id=tenant_id, user_id=user_id, code=code))
                await session.flush()
        except IntegrityError:
            # The user's first request raced this one, or (rarely) the code is taken.
            found = await session.scalar(
                select(ReferralCode.code).where(ReferralCode.user_id == user_id)
            )
            if found is not None:
                return found
            continue
        return code
    raise RuntimeError("could not find a free referral code")  # pragma: no cover


async def claim_code(
    session: AsyncSession, *, tenant_id: str, user_id: str, code: str, economy: Economy
) -> Referral:
    """Record that ``code``'s owner referred the user; pays at once or when the
    user first buys credits, as the panel's economy says (``referralClearsOn``)."""
    owner = await session.scalar(
        select(ReferralCode.user_id).where(
            ReferralCode.tenant_id == tenant_id, ReferralCode.code == code.strip().upper()
        )
    )
    if owner is None:
        raise NotFound("referral code")
    if owner == user_id:
        raise ValidationFailed(
            "You cannot claim your own referral code",
            details={"fields": [{"field": "code", "message": "is your own"}]},
        )
    # Two users claiming each other's codes would farm both sides.
    mutual = await session.scalar(
        select(Referral.id).where(
            Referral.referrer_user_id == user_id, Referral.referred_user_id == owner
        )
    )
    if mutual is not None:
        raise ValidationFailed(
            "You referred this user yourself",
            details={"fields": [{"field": "code", "message": "belongs to someone you referred"}]},
        )
    referral = Referral(
        tenant_id=tenant_id,
        referrer_user_id=owner,
        referred_user_id=user_id,
        status="pending",
        clears_on=economy.referral_clears_on,
        referrer_coins=economy.referral_referrer_coins,
        referred_coins=economy.referral_referred_coins,
    )
    try:
        async with session.begin_nested():
            session.add(referral)
            await session.flush()
    except IntegrityError:
        raise AlreadyClaimed("You have already claimed a referral code") from None
    if referral.clears_on == "claim":
        await _clear(session, referral)
    return referral


async def note_credit_purchase(session: AsyncSession, *, tenant_id: str, user_id: str) -> None:
    """The user bought credits: a referral waiting for that clears (once)."""
    referral = await session.scalar(
        select(Referral).where(
            Referral.tenant_id == tenant_id,
            Referral.referred_user_id == user_id,
            Referral.status == "pending",
            Referral.clears_on == "first_credit_purchase",
        )
    )
    if referral is not None:
        await _clear(session, referral)


async def _clear(session: AsyncSession, referral: Referral) -> None:
    changed = await session.execute(
        update(Referral)
        .where(Referral.id == referral.id, Referral.status == "pending")
        .values(status="cleared", cleared_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        return  # cleared by a concurrent purchase: paid there
    for side, user_id, coins in (
        ("referrer", referral.referrer_user_id, referral.referrer_coins),
        ("referred", referral.referred_user_id, referral.referred_coins),
    ):
        if coins > 0:
            await wallet.credit(
                session,
                tenant_id=referral.tenant_id,
                user_id=user_id,
                currency="coins",
                amount=coins,
                kind="reward.referral",
                key=f"reward.referral:{referral.id}:{side}",
                source=REWARDS,
                reference=f"referral:{referral.id}",
                memo=f"Referral reward ({side})",
            )


async def summary(session: AsyncSession, *, tenant_id: str, user_id: str) -> ReferralSummary:
    code = await own_code(session, tenant_id=tenant_id, user_id=user_id)
    mine = await session.scalar(select(Referral).where(Referral.referred_user_id == user_id))
    counts = dict(
        (
            await session.execute(
                select(Referral.status, func.count())
                .where(Referral.referrer_user_id == user_id)
                .group_by(Referral.status)
            )
        ).all()
    )
    earned = await session.scalar(
        select(func.coalesce(func.sum(Referral.referrer_coins), 0)).where(
            Referral.referrer_user_id == user_id, Referral.status == "cleared"
        )
    )
    return ReferralSummary(
        code=code,
        referred_by=mine.referrer_user_id if mine is not None else None,
        referral_status=mine.status if mine is not None else None,
        pending=int(counts.get("pending", 0)),
        cleared=int(counts.get("cleared", 0)),
        coins_earned=int(earned or 0),
    )
