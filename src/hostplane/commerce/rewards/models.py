"""A user's daily-reward state, referral codes and referrals."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.base import Base, IdMixin, IdString
from hostplane.core.db.tenancy import TenantScoped


class DailyReward(IdMixin, TenantScoped, Base):
    """One row per user: when they last claimed and how long their streak is."""

    __tablename__ = "daily_rewards"
    __table_args__ = (UniqueConstraint("user_id"),)

    user_id: Mapped[str] = mapped_column(IdString, ForeignKey("users.id", ondelete="CASCADE"))
    last_claimed_at: Mapped[datetime | None] = mapped_column()
    # Claims so far: the next claim's ledger key is built from it, so one claim
    # is paid once whatever races it.
    claims: Mapped[int] = mapped_column(Integer, default=0)
    streak: Mapped[int] = mapped_column(Integer, default=0)


class ReferralCode(IdMixin, TenantScoped, Base):
    __tablename__ = "referral_codes"
    __table_args__ = (UniqueConstraint("user_id"), UniqueConstraint("tenant_id", "code"))

    user_id: Mapped[str] = mapped_column(IdString, ForeignKey("users.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Referral(IdMixin, TenantScoped, Base):
    """A referred user and who referred them; each user is referred at most once."""

    __tablename__ = "referrals"
    __table_args__ = (UniqueConstraint("referred_user_id"),)

    referrer_user_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    referred_user_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("users.id", ondelete="CASCADE")
    )
    # pending | cleared
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # The terms when the code was claimed: a later change of the panel's
    # economy does not change what a pending referral pays.
    clears_on: Mapped[str] = mapped_column(String(32))
    referrer_coins: Mapped[int] = mapped_column(Integer)
    referred_coins: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    cleared_at: Mapped[datetime | None] = mapped_column()
