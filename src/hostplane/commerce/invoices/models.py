"""Invoices, their lines, and each tenant's invoice number counter."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped

INVOICE_STATUSES = ("draft", "open", "paid", "void")


class Invoice(IdMixin, TimestampMixin, TenantScoped, Base):
    """What a user owes or paid: credit top-ups today, orders later.

    ``number`` is given when the invoice is paid, from the tenant's counter,
    so paid invoices are numbered without gaps; drafts and open invoices have
    none. Amounts are minor units of ``currency``.
    """

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("tenant_id", "number"),
        # One invoice per thing sold (a top-up, an order).
        UniqueConstraint("tenant_id", "source", "source_id"),
    )

    user_id: Mapped[str] = mapped_column(IdString, index=True)
    number: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="draft")
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[int] = mapped_column(BigInteger, default=0)
    tax: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    # What the invoice is for: "topup" (a credit purchase), later "order".
    source: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(String(64))
    # How it was paid ("stripe", "upi") and the gateway's reference.
    payment_method: Mapped[str | None] = mapped_column(String(32))
    payment_reference: Mapped[str | None] = mapped_column(String(255))
    due_at: Mapped[datetime | None] = mapped_column()
    paid_at: Mapped[datetime | None] = mapped_column()
    voided_at: Mapped[datetime | None] = mapped_column()


class InvoiceLine(IdMixin, TenantScoped, Base):
    __tablename__ = "invoice_lines"

    invoice_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("invoices.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)
    description: Mapped[str] = mapped_column(String(500))
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    unit_amount: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)


class InvoiceCounter(Base):
    """The last invoice number a tenant used; taken under a row lock when an invoice is paid."""

    __tablename__ = "invoice_counters"

    tenant_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    last_number: Mapped[int] = mapped_column(Integer, default=0)
