"""Endpoints, the events written for them, deliveries and every attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped

DELIVERY_STATUSES = ("pending", "sending", "succeeded", "failed")
# A delivery in one of these is still owed to its endpoint.
OPEN_STATUSES = ("pending", "sending")
RESPONSE_KEPT_BYTES = 2048


class WebhookEndpoint(IdMixin, TimestampMixin, TenantScoped, Base):
    """A tenant's receiver: a URL, the events it wants and its signing secret."""

    __tablename__ = "webhook_endpoints"

    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(500))
    events: Mapped[list[Any]] = mapped_column(default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Why it was disabled: "manual", "gone" (the receiver answered 410) or
    # "failing" (too many events in a row failed for good).
    disabled_reason: Mapped[str | None] = mapped_column(String(32))
    # Sealed with the installation's key; shown in the clear once, at creation
    # or rotation.
    secret_sealed: Mapped[str] = mapped_column(Text)
    # After a rotation the old secret signs too, until this moment.
    previous_secret_sealed: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column()
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)


class WebhookEvent(IdMixin, TenantScoped, Base):
    """One event as sent: its id is the ``webhook-id`` of every delivery of it."""

    __tablename__ = "webhook_events"

    type: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(IdMixin, TimestampMixin, TenantScoped, Base):
    """An event owed to one endpoint, retried until it succeeds or runs out."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The head of each endpoint's queue: its oldest open delivery.
        Index("ix_webhook_deliveries_endpoint_status", "endpoint_id", "status", "id"),
        # The claim: open deliveries by due time.
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
    )

    endpoint_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(String(200))
    locked_until: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    finished_at: Mapped[datetime | None] = mapped_column()


class WebhookAttempt(IdMixin, TenantScoped, Base):
    """One request to the receiver and what came back."""

    __tablename__ = "webhook_attempts"

    delivery_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    # The first 2 KB of the answer, decoded leniently.
    response_body: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
