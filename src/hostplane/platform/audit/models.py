from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.base import Base, IdString
from hostplane.core.db.tenancy import TenantOrShared

# Column widths, shared with the code that cuts values to fit.
ACTOR_ID_LENGTH = 64
ACTION_LENGTH = 100
RESOURCE_TYPE_LENGTH = 64
RESOURCE_ID_LENGTH = 200
IP_LENGTH = 64
USER_AGENT_LENGTH = 500
REQUEST_ID_LENGTH = 64
CHAIN_LENGTH = 40
TAMPERED_REASON_LENGTH = 300


class AuditLog(TenantOrShared, Base):
    """One audited action: who did what to which resource, from where.

    Rows are written once and never updated. ``tenant_id`` is the tenant the
    action happened in, or NULL for the platform's own work (the ``platform``
    chain). ``user_id`` is the user behind the actor (the user, or the creator
    of an API key) and has no foreign key: the trail outlives the account.
    """

    __tablename__ = "audit_logs"
    __table_args__ = (
        # The chain's order; also what makes a forked chain impossible to store.
        UniqueConstraint("chain", "seq"),
        Index("ix_audit_logs_resource", "resource_type", "resource_id"),
    )

    id: Mapped[str] = mapped_column(IdString, primary_key=True)
    chain: Mapped[str] = mapped_column(String(CHAIN_LENGTH))
    seq: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(ACTOR_ID_LENGTH), index=True)
    user_id: Mapped[str | None] = mapped_column(String(ACTOR_ID_LENGTH), index=True)
    action: Mapped[str] = mapped_column(String(ACTION_LENGTH), index=True)
    resource_type: Mapped[str] = mapped_column(String(RESOURCE_TYPE_LENGTH))
    resource_id: Mapped[str | None] = mapped_column(String(RESOURCE_ID_LENGTH))
    ip_address: Mapped[str | None] = mapped_column(String(IP_LENGTH))
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_LENGTH))
    request_id: Mapped[str | None] = mapped_column(String(REQUEST_ID_LENGTH))
    # "metadata" is reserved on declarative classes; the column keeps the name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(index=True)

    def hashed_fields(self) -> dict[str, Any]:
        """The stored values the entry's hash covers, by column name."""
        return {
            "id": self.id,
            "chain": self.chain,
            "seq": self.seq,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "tenant_id": self.tenant_id,
            "actor_type": self.actor_type,
            "actor_id": self.actor_id,
            "user_id": self.user_id,
            "action": self.action,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "ip_address": self.ip_address,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "metadata": self.meta,
            "created_at": self.created_at,
        }


class AuditChainHead(Base):
    """The end of one chain: the row appenders lock, so a chain can never fork.

    ``seq``/``hash`` are those of the chain's newest entry. ``anchor_seq`` and
    ``anchor_hash`` are those of the last entry removed by retention (0 and
    the genesis hash before the first prune): verification starts there.
    Internal bookkeeping, never shown to tenants, so not tenant-filtered.
    """

    __tablename__ = "audit_chain_heads"

    chain: Mapped[str] = mapped_column(String(CHAIN_LENGTH), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(
        IdString, ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))
    anchor_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    anchor_hash: Mapped[str] = mapped_column(String(64))
    pruned_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AuditCheckpoint(Base):
    """A chain's head as the panel last wrote it, with a MAC only the panel can make.

    Rewritten with every append (and prune) in the same transaction as the
    head. The MAC is an HMAC-SHA256 with a key derived from the panel's
    ``secret_key``, which the database never holds: someone who can write the
    database but lacks the secret cannot rewind a head (cut the newest
    entries off) and make the checkpoint agree. ``tampered_seq`` and
    ``tampered_reason`` record that an append found the head and checkpoint
    disagreeing, and are carried forward (under the MAC) so later appends
    do not paper over it. See :mod:`hostplane.platform.audit.checkpoint`.
    Internal bookkeeping, never shown to tenants, so not tenant-filtered.
    """

    __tablename__ = "audit_checkpoints"

    chain: Mapped[str] = mapped_column(String(CHAIN_LENGTH), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(
        IdString, ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    anchor_seq: Mapped[int] = mapped_column(BigInteger)
    anchor_hash: Mapped[str] = mapped_column(String(64))
    tampered_seq: Mapped[int | None] = mapped_column(BigInteger)
    tampered_reason: Mapped[str | None] = mapped_column(String(TAMPERED_REASON_LENGTH))
    mac: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
