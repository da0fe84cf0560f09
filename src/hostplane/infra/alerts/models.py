"""Alert rules, the alerts they open and the actions (notifications) each alert owes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped

ALERT_TYPES = ("resource_threshold", "node_offline", "server_crashed")
SEVERITIES = ("info", "warning", "critical")
ACTION_STATUSES = ("pending", "sending", "succeeded", "failed")
OPEN_ACTION_STATUSES = ("pending", "sending")


class AlertRule(IdMixin, TimestampMixin, TenantScoped, Base):
    """What to watch (a type, a target, conditions) and whom to tell (actions)."""

    __tablename__ = "alert_rules"

    name: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(32))
    # "server" or "node"; ``target_id`` is one id of that kind or "*" (all of them).
    target: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    conditions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actions: Mapped[list[Any]] = mapped_column(default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    # An alert of this rule stays open after its condition clears, until someone resolves it.
    keep_open: Mapped[bool] = mapped_column(Boolean, default=False)


class Alert(IdMixin, TenantScoped, Base):
    """One firing of a rule for one target."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_resolved_created", "resolved", "created_at"),)

    rule_id: Mapped[str | None] = mapped_column(
        IdString, ForeignKey("alert_rules.id", ondelete="SET NULL"), index=True
    )
    server_id: Mapped[str | None] = mapped_column(IdString, index=True)
    node_id: Mapped[str | None] = mapped_column(IdString, index=True)
    type: Mapped[str] = mapped_column(String(32), index=True)
    severity: Mapped[str] = mapped_column(String(16), index=True)
    title: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(String(1000))
    # JSON key is "metadata" on the wire; the attribute name is taken by SQLAlchemy.
    details: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # "<rule id>:<target id>" while open, NULL once resolved. Unique, so the
    # database itself refuses a second open alert for the same rule and
    # target, whichever worker tries (NULLs never collide on either database).
    open_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    resolved_at: Mapped[datetime | None] = mapped_column()
    # A user id, or "system" when the condition cleared by itself.
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AlertAction(IdMixin, TimestampMixin, TenantScoped, Base):
    """A notification an alert owes (webhook or e-mail), retried until it is sent or runs out."""

    __tablename__ = "alert_actions"
    __table_args__ = (Index("ix_alert_actions_status_next", "status", "next_attempt_at"),)

    alert_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("alerts.id", ondelete="CASCADE"), index=True
    )
    # "alert.created" or "alert.resolved": what the notification announces.
    event: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    # The rule's action as it was when the alert fired (url, or to).
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(String(200))
    locked_until: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(500))
    finished_at: Mapped[datetime | None] = mapped_column()
