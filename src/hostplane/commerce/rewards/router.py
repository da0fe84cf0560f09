"""QeinTech's earning routes: the daily reward and referrals."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hostplane.commerce.rewards import service
from hostplane.commerce.rewards.schemas import DailyClaimed, ReferralClaim, ReferralOut
from hostplane.commerce.wallet.router import caller_wallet, wallet_out
from hostplane.core.http.deps import Authenticated, RuntimeDep, SessionDep
from hostplane.core.http.envelope import Envelope, ok
from hostplane.platform.admin import live as live_config

router = APIRouter(prefix="/api/economy/earn", tags=["rewards"])


@router.post("/daily", response_model=Envelope[DailyClaimed])
async def claim_daily(
    session: SessionDep, runtime: RuntimeDep, principal: Authenticated
) -> Envelope[DailyClaimed]:
    """Claim the daily coins, once per rolling 24 hours; an unbroken streak adds
    the configured bonus. A second claim is 409 ``ALREADY_CLAIMED`` with
    ``details.nextClaimAt``."""
    tenant_id, user_id = caller_wallet(principal, moves_money=True)
    economy = live_config.current(runtime).economy
    result = await service.claim_daily(
        session, tenant_id=tenant_id, user_id=user_id, economy=economy
    )
    return ok(
        DailyClaimed(
            coins=result.coins,
            streak=result.streak,
            next_claim_at=result.next_claim_at,
            wallet=await wallet_out(session, tenant_id=tenant_id, user_id=user_id),
        )
    )


@router.get("/referral", response_model=Envelope[ReferralOut])
async def get_referral(session: SessionDep, principal: Authenticated) -> Envelope[ReferralOut]:
    """The caller's referral code (made on first request) and how their referrals stand."""
    tenant_id, user_id = caller_wallet(principal)
    return ok(_out(await service.summary(session, tenant_id=tenant_id, user_id=user_id)))


@router.post("/referral", response_model=Envelope[ReferralOut])
async def referral(
    session: SessionDep,
    runtime: RuntimeDep,
    principal: Authenticated,
    body: ReferralClaim | None = None,
) -> Any:
    """Without ``code``: the caller's own code. With ``code``: claim someone's code.
    Both sides' coins are held ``pending`` until the caller's first credit purchase
    (or paid at once, as the panel is configured). Your own code is 400; a second
    claim is 409 ``ALREADY_CLAIMED``; an unknown code 404."""
    tenant_id, user_id = caller_wallet(principal, moves_money=True)
    if body is not None and body.code is not None:
        economy = live_config.current(runtime).economy
        await service.claim_code(
            session, tenant_id=tenant_id, user_id=user_id, code=body.code, economy=economy
        )
    return ok(_out(await service.summary(session, tenant_id=tenant_id, user_id=user_id)))


def _out(found: service.ReferralSummary) -> ReferralOut:
    return ReferralOut(
        code=found.code,
        referred_by=found.referred_by,
        referral_status=found.referral_status,
        referrals_pending=found.pending,
        referrals_cleared=found.cleared,
        coins_earned=found.coins_earned,
    )
