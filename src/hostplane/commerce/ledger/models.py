"""Accounts, transactions and their entries.

A transaction is one movement: a group of entries that sums to zero in each
currency. Entries are never changed or deleted; a mistake is corrected by a
new transaction (a reversal). An account's ``balance`` is a cache of the sum
of its entries, kept in the same statement that writes an entry, and checked
against that sum by ``hostplane ledger verify``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.base import Base, IdMixin, IdString
from hostplane.core.db.tenancy import TenantScoped

# The owner of the tenant's own accounts (rewards paid out, gateway clearing,
# sales, conversions, adjustments): anything that is not a user's wallet.
SYSTEM_OWNER = "system"


class LedgerAccount(IdMixin, TenantScoped, Base):
    """A balance in one currency: a user's ``coins`` or ``credits``, or a system account."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "owner", "name"),
        # The database, not only the service, refuses an overdrawn wallet.
        CheckConstraint("allow_negative OR balance >= 0", name="not_overdrawn"),
    )

    # A user's id, or SYSTEM_OWNER.
    owner: Mapped[str] = mapped_column(String(40))
    # "coins" / "credits" for a user; "rewards", "gateway:stripe", ... for the system.
    name: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(8))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    # System accounts are the other side of every movement and may go negative
    # (rewards paid out); a user's never does.
    allow_negative: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerTransaction(IdMixin, TenantScoped, Base):
    """One movement of money, posted once under its idempotency key."""

    __tablename__ = "ledger_transactions"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    # What moved the money: "reward.daily", "topup", "server.deploy", "refund", ...
    kind: Mapped[str] = mapped_column(String(64), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    # What it is about: "server:{id}", "topup:{id}", ...
    reference: Mapped[str | None] = mapped_column(String(200), index=True)
    memo: Mapped[str | None] = mapped_column(String(500))
    # The transaction this one reverses, if it is a reversal.
    reverses_id: Mapped[str | None] = mapped_column(
        IdString, ForeignKey("ledger_transactions.id"), unique=True
    )
    actor_user_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerEntry(IdMixin, TenantScoped, Base):
    """One leg of a transaction: a signed amount on one account."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="moves_something"),
        # A user's statement: their account's entries, newest first.
        Index("ix_ledger_entries_account_created", "account_id", "created_at"),
    )

    transaction_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("ledger_transactions.id"), index=True
    )
    account_id: Mapped[str] = mapped_column(IdString, ForeignKey("ledger_accounts.id"))
    currency: Mapped[str] = mapped_column(String(8))
    # Positive adds to the account, negative takes from it; minor units.
    amount: Mapped[int] = mapped_column(BigInteger)
    # The account's balance right after this entry (a running statement).
    balance_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
