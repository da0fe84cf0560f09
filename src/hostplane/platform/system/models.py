"""The persisted log of queue and provisioning events (``GET /api/system/events``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.base import Base, IdMixin, IdString


class SystemEvent(IdMixin, Base):
    """A job that started, retried or failed, a webhook delivery's outcome, an alert."""

    __tablename__ = "system_events"
    __table_args__ = (Index("ix_system_events_type_id", "type", "id"),)

    # None for the platform's own work (recurring maintenance).
    tenant_id: Mapped[str | None] = mapped_column(
        IdString, ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(100))
    subject_id: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
