from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin

JOB_STATUSES = ("queued", "running", "succeeded", "failed")


class Job(IdMixin, TimestampMixin, Base):
    """One unit of durable work. Arguments are ids, never objects."""

    __tablename__ = "jobs"
    __table_args__ = (
        # The claim query: due queued jobs (and expired leases) in run order.
        Index("ix_jobs_status_run_at", "status", "run_at"),
    )

    tenant_id: Mapped[str | None] = mapped_column(
        IdString, ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    target_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # Set when the same work must never be queued twice (a payment's side
    # effect, say): the unique index enforces it.
    unique_key: Mapped[str | None] = mapped_column(String(200), unique=True)

    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    run_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(String(200))
    locked_until: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    progress: Mapped[int] = mapped_column(Integer, default=0)
    progress_message: Mapped[str | None] = mapped_column(String(500))
    # Safe to show a client: a HostplaneError's code and message, or a generic
    # message for unexpected failures (the details stay in the worker's log).
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)


class JobWorker(Base):
    """A running worker's heartbeat, so ``/status`` can tell whether the queue is served."""

    __tablename__ = "job_workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
