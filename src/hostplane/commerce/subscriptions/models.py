from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped

# provisioning: paid, being placed and installed; active: running its term;
# suspended: the term ended, the server is suspended until renewed or the grace ends;
# failed: placement or install failed for good and the charge was refunded;
# ended: the server was deleted after its grace.
SUBSCRIPTION_STATUSES = ("provisioning", "active", "suspended", "failed", "ended")


class ServerSubscription(IdMixin, TenantScoped, TimestampMixin, Base):
    """A server's plan term: what was bought, until when, and how it was paid.

    Kept in commerce, keyed by the server, so the servers domain knows nothing
    of plans or money. The row outlives its server (``server_id`` becomes null)
    as the record of the purchase.
    """

    __tablename__ = "server_subscriptions"
    __table_args__ = (Index("ix_server_subscriptions_status_expires_at", "status", "expires_at"),)

    server_id: Mapped[str | None] = mapped_column(
        IdString, ForeignKey("servers.id", ondelete="SET NULL"), unique=True
    )
    user_id: Mapped[str | None] = mapped_column(
        IdString, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    plan_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("plans.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="provisioning")
    # What the current period was paid with (pro-rating refunds what was paid).
    currency_type: Mapped[str] = mapped_column(String(8))
    price: Mapped[int] = mapped_column(BigInteger)
    period_seconds: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column()
    # The deploy's wallet key: a failed provisioning reverses exactly this movement.
    charge_key: Mapped[str | None] = mapped_column(String(200))
    renewals: Mapped[int] = mapped_column(Integer, default=0)
    changes: Mapped[int] = mapped_column(Integer, default=0)
    suspended_at: Mapped[datetime | None] = mapped_column()
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    ended_at: Mapped[datetime | None] = mapped_column()
