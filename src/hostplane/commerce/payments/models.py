"""Top-ups waiting for or paid through a gateway, and the gateways' events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped

TOPUP_STATUSES = ("pending", "paid", "failed")
EVENT_STATUSES = ("received", "processed", "ignored", "unmatched", "rejected")


class TopUp(IdMixin, TimestampMixin, TenantScoped, Base):
    """A user's purchase of credits, from the payment page until it is credited."""

    __tablename__ = "payment_topups"
    __table_args__ = (
        # The webhook finds its top-up by the gateway's session or link id.
        UniqueConstraint("gateway", "gateway_reference"),
    )

    user_id: Mapped[str] = mapped_column(IdString, index=True)
    # The gateway (stripe, razorpay) and the method the user chose (stripe, upi).
    gateway: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(32))
    # Minor units of ``currency`` (the credits currency).
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    gateway_reference: Mapped[str] = mapped_column(String(255))
    payment_url: Mapped[str] = mapped_column(String(2048))
    paid_at: Mapped[datetime | None] = mapped_column()
    # The gateway event that paid it and the ledger movement that credited it.
    paid_event_id: Mapped[str | None] = mapped_column(IdString)
    ledger_transaction_id: Mapped[str | None] = mapped_column(IdString)
    invoice_id: Mapped[str | None] = mapped_column(IdString)


class PaymentEvent(IdMixin, Base):
    """One verified gateway event, stored once: replays meet the unique key.

    Not tenant-scoped: gateways are the platform's, and an event names its
    top-up (and so its tenant) only inside its body.
    """

    __tablename__ = "payment_events"
    __table_args__ = (
        UniqueConstraint("gateway", "event_id"),
        Index("ix_payment_events_status", "status"),
    )

    gateway: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(100))
    reference: Mapped[str | None] = mapped_column(String(255))
    # ``received`` until the job looked at it; then processed (credited, or
    # found already credited), ignored (not a payment), unmatched (no such
    # top-up) or rejected (figures that disagree with the top-up).
    status: Mapped[str] = mapped_column(String(16), default="received")
    # What the signed body says: the top-up it names, whether it reports
    # money received, and how much (minor units).
    topup_id: Mapped[str | None] = mapped_column(IdString)
    paid: Mapped[bool] = mapped_column(default=False)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    detail: Mapped[str | None] = mapped_column(String(500))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column()
