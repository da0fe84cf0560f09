"""Reward bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from hostplane.commerce.wallet.schemas import WalletOut
from hostplane.core.schemas import ApiInput, ApiModel


class DailyClaimed(ApiModel):
    coins: int = Field(description="Coins paid by this claim, streak bonus included.")
    streak: int = Field(description="Days in a row, this one included.")
    next_claim_at: datetime
    wallet: WalletOut


class ReferralClaim(ApiInput):
    code: str | None = Field(
        default=None,
        min_length=4,
        max_length=32,
        description="Someone else's code to claim; leave out to get your own.",
    )


class ReferralOut(ApiModel):
    code: str = Field(description="The caller's own code, made on first request.")
    referred_by: str | None = Field(description="The id of the user whose code the caller claimed.")
    referral_status: str | None = Field(
        description="The caller's own referral: pending until it clears, then cleared."
    )
    referrals_pending: int
    referrals_cleared: int
    coins_earned: int = Field(description="Coins paid to the caller for people they referred.")
