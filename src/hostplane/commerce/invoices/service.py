"""Invoices: created with their lines, numbered when paid, listed and read by their owner.

Numbers are gap-free per tenant: the number is taken from the tenant's
counter row with a conditional ``UPDATE ... RETURNING`` in the transaction
that marks the invoice paid (the one that credits the wallet), so the row
stays locked until that transaction commits, and a rolled-back payment gives
its number back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.invoices.models import Invoice, InvoiceCounter, InvoiceLine
from hostplane.core.clock import utcnow
from hostplane.core.errors import Conflict, NotFound
from hostplane.core.pagination import PageMeta, PageParams, paginate
from hostplane.core.principal import Principal

NUMBER_PREFIX = "INV-"


class InvoiceNotFound(NotFound):
    def __init__(self, invoice_id: str) -> None:
        super().__init__("invoice", invoice_id)


@dataclass(frozen=True, slots=True)
class LineItem:
    """One line to invoice: ``unit_amount`` in minor units."""

    description: str
    unit_amount: int
    quantity: int = 1


@dataclass(frozen=True, slots=True)
class InvoiceView:
    invoice: Invoice
    lines: list[InvoiceLine]


def display_number(invoice: Invoice) -> str | None:
    return None if invoice.number is None else f"{NUMBER_PREFIX}{invoice.number:06d}"


async def create_invoice(
    session: AsyncSession,
    *,
    tenant_id: str,
    user_id: str,
    currency: str,
    lines: Sequence[LineItem],
    source: str,
    source_id: str,
    status: str = "open",
    due_at: datetime | None = None,
    tax: int = 0,
) -> Invoice:
    """A draft or open invoice (no number yet) with its lines and totals."""
    if status not in ("draft", "open"):
        raise ValueError("new invoices are draft or open; pay them with mark_paid")
    subtotal = sum(line.unit_amount * line.quantity for line in lines)
    invoice = Invoice(
        tenant_id=tenant_id,
        user_id=user_id,
        status=status,
        currency=currency.upper(),
        subtotal=subtotal,
        tax=tax,
        total=subtotal + tax,
        source=source,
        source_id=source_id,
        due_at=due_at,
    )
    session.add(invoice)
    await session.flush()
    for position, line in enumerate(lines):
        session.add(
            InvoiceLine(
                tenant_id=tenant_id,
                invoice_id=invoice.id,
                position=position,
                description=line.description,
                quantity=line.quantity,
                unit_amount=line.unit_amount,
                amount=line.unit_amount * line.quantity,
            )
        )
    await session.flush()
    return invoice


async def mark_paid(
    session: AsyncSession,
    invoice: Invoice,
    *,
    method: str | None = None,
    reference: str | None = None,
    paid_at: datetime | None = None,
) -> Invoice:
    """Mark ``invoice`` paid and give it the tenant's next number (once)."""
    if invoice.status == "paid":
        return invoice
    if invoice.status == "void":
        raise Conflict("A void invoice cannot be paid", code="INVOICE_VOID")
    invoice.number = await next_number(session, invoice.tenant_id)
    invoice.status = "paid"
    invoice.paid_at = paid_at or utcnow()
    invoice.payment_method = method
    invoice.payment_reference = reference
    await session.flush()
    return invoice


async def issue_paid(
    session: AsyncSession,
    *,
    tenant_id: str,
    user_id: str,
    currency: str,
    lines: Sequence[LineItem],
    source: str,
    source_id: str,
    method: str | None = None,
    reference: str | None = None,
) -> Invoice:
    """The paid invoice of ``source``/``source_id``, created and numbered on first call."""
    existing = await session.scalar(
        select(Invoice).where(
            Invoice.tenant_id == tenant_id,
            Invoice.source == source,
            Invoice.source_id == source_id,
        )
    )
    if existing is None:
        existing = await create_invoice(
            session,
            tenant_id=tenant_id,
            user_id=user_id,
            currency=currency,
            lines=lines,
            source=source,
            source_id=source_id,
        )
    return await mark_paid(session, existing, method=method, reference=reference)


async def next_number(session: AsyncSession, tenant_id: str) -> int:
    """The tenant's next invoice number; its counter row stays locked until commit."""
    bump = (
        update(InvoiceCounter)
        .where(InvoiceCounter.tenant_id == tenant_id)
        .values(last_number=InvoiceCounter.last_number + 1)
        .returning(InvoiceCounter.last_number)
        .execution_options(synchronize_session=False)
    )
    number = (await session.execute(bump)).scalar_one_or_none()
    if number is None:
        # First invoice of the tenant: make the row (a concurrent first
        # payment may make it too, hence DO NOTHING), then take the number.
        values = {"tenant_id": tenant_id, "last_number": 0}
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(
                postgresql_insert(InvoiceCounter).values(values).on_conflict_do_nothing()
            )
        else:
            await session.execute(
                sqlite_insert(InvoiceCounter).values(values).on_conflict_do_nothing()
            )
        number = (await session.execute(bump)).scalar_one()
    return int(number)


async def list_own(
    session: AsyncSession, *, user_id: str, params: PageParams
) -> tuple[list[Invoice], PageMeta]:
    """The user's invoices, newest first (drafts are not shown)."""
    statement = (
        select(Invoice)
        .where(Invoice.user_id == user_id, Invoice.status != "draft")
        .order_by(Invoice.created_at.desc(), Invoice.id.desc())
    )
    invoices, meta = await paginate(session, statement, params)
    return list(invoices), meta


async def get_for_caller(session: AsyncSession, caller: Principal, invoice_id: str) -> InvoiceView:
    """One invoice with its lines, for its owner or a holder of ``billing.read``."""
    invoice = await session.get(Invoice, invoice_id)
    if invoice is None or invoice.status == "draft":
        raise InvoiceNotFound(invoice_id)
    if invoice.user_id != caller.user_id and not caller.has("billing.read"):
        # Someone else's invoice is not there for this caller.
        raise InvoiceNotFound(invoice_id)
    lines = list(
        await session.scalars(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == invoice.id)
            .order_by(InvoiceLine.position)
        )
    )
    return InvoiceView(invoice, lines)


async def first_lines(session: AsyncSession, invoice_ids: Sequence[str]) -> dict[str, str]:
    """Each invoice's first line's description, for listings (one query)."""
    if not invoice_ids:
        return {}
    rows = await session.execute(
        select(InvoiceLine.invoice_id, InvoiceLine.description).where(
            InvoiceLine.invoice_id.in_(invoice_ids), InvoiceLine.position == 0
        )
    )
    return {str(row[0]): str(row[1]) for row in rows}
