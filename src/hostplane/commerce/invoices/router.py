"""``/api/billing/invoices``: the caller's invoices (QeinTech's and SkyPANEL's route, C8)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from hostplane.commerce.invoices import pdf, service
from hostplane.commerce.invoices.schemas import InvoiceOut
from hostplane.core.errors import Forbidden
from hostplane.core.http.deps import Authenticated, PageDep, RuntimeDep, SessionDep
from hostplane.core.http.envelope import PageEnvelope, page
from hostplane.core.principal import Principal
from hostplane.identity.users import service as users

router = APIRouter(prefix="/api/billing/invoices", tags=["billing"])


def _own_user_id(principal: Principal) -> str:
    if principal.kind != "user" or principal.user_id is None:
        raise Forbidden("Only a logged-in user can do this (not an API key)", code="USER_REQUIRED")
    return principal.user_id


@router.get("", response_model=PageEnvelope[InvoiceOut])
async def list_invoices(
    session: SessionDep, principal: Authenticated, params: PageDep
) -> PageEnvelope[InvoiceOut]:
    """The caller's invoices (credit top-ups, later orders), newest first, each with its PDF link."""
    invoices, meta = await service.list_own(session, user_id=_own_user_id(principal), params=params)
    described = await service.first_lines(session, [invoice.id for invoice in invoices])
    return page([InvoiceOut.of(i, described.get(i.id)) for i in invoices], meta)


@router.get(
    "/{invoice_id}/pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "The invoice as a PDF"}},
)
async def invoice_pdf(
    invoice_id: str, session: SessionDep, principal: Authenticated, runtime: RuntimeDep
) -> Response:
    """The invoice as a PDF, for its owner (or a holder of ``billing.read``)."""
    _own_user_id(principal)
    view = await service.get_for_caller(session, principal, invoice_id)
    owner = await users.get_user(session, view.invoice.user_id)
    name = " ".join(part for part in (owner.first_name, owner.last_name) if part)
    settings = runtime.settings.payments
    body = pdf.render(
        view,
        issuer=settings.invoice_issuer,
        issuer_address=settings.invoice_issuer_address,
        customer=f"{name} <{owner.email}>" if name else owner.email,
    )
    filename = f"{service.display_number(view.invoice) or view.invoice.id}.pdf"
    return Response(
        body,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
