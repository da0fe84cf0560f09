"""An invoice as a PDF (fpdf2), built on request from the stored invoice."""

from __future__ import annotations

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from hostplane.commerce.invoices.service import InvoiceView, display_number
from hostplane.core.money import to_major


def _latin1(text: str) -> str:
    # The PDF's built-in fonts cover Latin-1 only; anything else (a name in
    # another script) is shown as "?" rather than failing the download.
    return text.encode("latin-1", "replace").decode("latin-1")


def _money(minor: int, currency: str) -> str:
    return f"{to_major(minor, currency)} {currency}"


def render(view: InvoiceView, *, issuer: str, issuer_address: str, customer: str) -> bytes:
    invoice = view.invoice
    pdf = FPDF(format="A4")
    pdf.set_title(_latin1(f"Invoice {display_number(invoice) or invoice.id}"))
    pdf.set_creator("hostplane")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, _latin1(issuer), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=10)
    for line in issuer_address.splitlines():
        pdf.cell(0, 5, _latin1(line), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)
    pdf.set_font("Helvetica", "B", 14)
    title = "Invoice " + (display_number(invoice) or "(not yet numbered)")
    pdf.cell(0, 8, _latin1(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=10)
    facts = [
        ("Status", invoice.status),
        ("Issued", invoice.created_at.strftime("%Y-%m-%d")),
        ("Paid", invoice.paid_at.strftime("%Y-%m-%d %H:%M UTC") if invoice.paid_at else "-"),
        ("Billed to", customer),
        ("Payment", invoice.payment_method or "-"),
        ("Reference", invoice.payment_reference or invoice.id),
    ]
    for label, value in facts:
        pdf.cell(35, 6, label)
        pdf.cell(0, 6, _latin1(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)
    pdf.set_font("Helvetica", "B", 10)
    widths = (100, 20, 35, 35)
    for width, heading in zip(widths, ("Description", "Qty", "Unit price", "Amount"), strict=True):
        pdf.cell(width, 7, heading, border="B")
    pdf.ln()
    pdf.set_font("Helvetica", size=10)
    for item in view.lines:
        cells = (
            item.description,
            str(item.quantity),
            _money(item.unit_amount, invoice.currency),
            _money(item.amount, invoice.currency),
        )
        for width, text in zip(widths, cells, strict=True):
            pdf.cell(width, 7, _latin1(text))
        pdf.ln()
    pdf.ln(4)
    for label, minor in (("Subtotal", invoice.subtotal), ("Tax", invoice.tax)):
        pdf.cell(155, 6, label, align="R")
        pdf.cell(35, 6, _money(minor, invoice.currency), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(155, 8, "Total", align="R")
    pdf.cell(35, 8, _money(invoice.total, invoice.currency), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())
