from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from hostplane.commerce.invoices.models import Invoice
from hostplane.commerce.invoices.service import display_number
from hostplane.core.money import to_json_number
from hostplane.core.schemas import ApiModel

InvoiceStatus = Literal["draft", "open", "paid", "void"]


class InvoiceOut(ApiModel):
    id: str
    number: str | None = Field(description="INV-000042, given when the invoice is paid.")
    status: InvoiceStatus
    currency: str
    amount: int | float = Field(description="The total, in major units of `currency`.")
    subtotal: int | float
    tax: int | float
    amount_minor: int = Field(description="The total in minor units (cents).")
    description: str | None = Field(description="What was bought (the first line).")
    source: str = Field(description="What the invoice is for: `topup` (credits), later `order`.")
    payment_method: str | None
    due_date: datetime | None
    paid_at: datetime | None
    created_at: datetime
    pdf_url: str

    @classmethod
    def of(cls, invoice: Invoice, description: str | None = None) -> InvoiceOut:
        currency = invoice.currency
        return cls(
            id=invoice.id,
            number=display_number(invoice),
            status=invoice.status,
            currency=currency,
            amount=to_json_number(invoice.total, currency),
            subtotal=to_json_number(invoice.subtotal, currency),
            tax=to_json_number(invoice.tax, currency),
            amount_minor=invoice.total,
            description=description,
            source=invoice.source,
            payment_method=invoice.payment_method,
            due_date=invoice.due_at,
            paid_at=invoice.paid_at,
            created_at=invoice.created_at,
            pdf_url=f"/api/billing/invoices/{invoice.id}/pdf",
        )
