from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped


class ScheduledTask(IdMixin, TenantScoped, TimestampMixin, Base):
    """A cron-timed chain of actions on one server, run as ``owner_id`` at run time.

    ``action`` and ``payload`` are the chain's first step (Catalyst's shape);
    ``steps`` holds the ones that follow, each with its own delay.
    """

    __tablename__ = "scheduled_tasks"
    __table_args__ = (Index("ix_scheduled_tasks_enabled_next_run_at", "enabled", "next_run_at"),)

    server_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("servers.id", ondelete="CASCADE"), index=True
    )
    # Whose permissions every run uses (read again when the run starts).
    owner_id: Mapped[str] = mapped_column(IdString)
    name: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any] | None] = mapped_column()
    schedule: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    only_when_online: Mapped[bool] = mapped_column(Boolean, default=False)
    # skip | runOnce: what a run missed while no scheduler was running becomes.
    catch_up: Mapped[str] = mapped_column(String(16), default="skip")
    steps: Mapped[list[Any]] = mapped_column(default=list)
    last_run_at: Mapped[datetime | None] = mapped_column()
    # None while disabled. Scheduler instances claim a due run by moving this
    # forward with a compare-and-set UPDATE, so each run is claimed once.
    next_run_at: Mapped[datetime | None] = mapped_column()
    run_count: Mapped[int] = mapped_column(Integer, default=0)


class TaskRun(IdMixin, TenantScoped, TimestampMixin, Base):
    """One execution of a task: when, how it went, and each step's outcome."""

    __tablename__ = "scheduled_task_runs"
    __table_args__ = (
        # The database, not timing, keeps a scheduled time from running twice.
        UniqueConstraint("task_id", "scheduled_for"),
        Index("ix_scheduled_task_runs_status_deadline_at", "status", "deadline_at"),
    )

    task_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("scheduled_tasks.id", ondelete="CASCADE"), index=True
    )
    server_id: Mapped[str] = mapped_column(IdString)
    # schedule | manual | catchUp
    trigger: Mapped[str] = mapped_column(String(16))
    scheduled_for: Mapped[datetime] = mapped_column()
    # queued | running | succeeded | failed | skipped
    status: Mapped[str] = mapped_column(String(16), default="queued")
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # A run still queued or running after this is failed by the sweeper.
    deadline_at: Mapped[datetime] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    # The chain as it was when the run was queued, with each step's outcome.
    steps: Mapped[list[Any]] = mapped_column(default=list)
    job_id: Mapped[str | None] = mapped_column(IdString)
