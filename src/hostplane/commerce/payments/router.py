"""``/api/billing/top-up`` and the gateways' webhooks (QeinTech's routes, mPanel's Stripe webhook)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.payments import jobs as _jobs  # noqa: F401 - registers the job handler
from hostplane.commerce.payments import service
from hostplane.commerce.payments.models import TopUp
from hostplane.commerce.payments.schemas import TopUpIn, TopUpOut, WebhookReceived
from hostplane.core.errors import Forbidden, ValidationFailed
from hostplane.core.http.deps import Authenticated, RuntimeDep, SessionDep
from hostplane.core.http.envelope import Envelope, ok
from hostplane.core.money import to_json_number
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.identity.users import service as users
from hostplane.platform.idempotency.http import IdempotencyKey, replayable

router = APIRouter(tags=["billing"])

# The raw body is what the gateways sign; a larger one is no gateway's event.
MAX_WEBHOOK_BYTES = 1024 * 1024


def _buyer(principal: Principal) -> tuple[str, str]:
    if principal.kind != "user" or principal.user_id is None or principal.tenant_id is None:
        raise Forbidden(
            "Only a logged-in user can buy credits (not an API key)", code="USER_REQUIRED"
        )
    return principal.tenant_id, principal.user_id


def _topup_out(topup: TopUp) -> TopUpOut:
    return TopUpOut(
        id=topup.id,
        gateway=topup.method,
        status=topup.status,
        amount=to_json_number(topup.amount, topup.currency),
        amount_minor=topup.amount,
        currency=topup.currency,
        payment_url=topup.payment_url,
        reference=topup.gateway_reference,
        created_at=topup.created_at,
    )


@router.post("/api/billing/top-up", response_model=Envelope[TopUpOut])
async def top_up(
    body: TopUpIn,
    session: SessionDep,
    principal: Authenticated,
    runtime: RuntimeDep,
    key: IdempotencyKey = None,
) -> Any:
    """Buy credits: answers the gateway's payment page (`stripe` Checkout or a `upi` payment
    link). The wallet is credited when the gateway's signed webhook reports the payment."""
    tenant_id, user_id = _buyer(principal)
    async with replayable(session, principal, key, scope="billing.top-up", body=body) as slot:
        if slot.replay is not None:
            return slot.replay
        buyer = await users.get_user(session, user_id)
        topup = await service.top_up(
            session,
            service.Caller(tenant_id=tenant_id, user_id=user_id, email=buyer.email),
            settings=runtime.settings,
            amount=body.amount,
            method=body.gateway,
        )
        return slot.keep(ok(_topup_out(topup)))


async def _receive(
    gateway: str, request: Request, session: AsyncSession, runtime: Runtime
) -> Envelope[WebhookReceived]:
    payload = await request.body()
    if len(payload) > MAX_WEBHOOK_BYTES:
        raise ValidationFailed("The body is too large for a gateway event", code="TOO_LARGE")
    received = await service.receive_webhook(
        session,
        settings=runtime.settings,
        gateway_name=gateway,
        payload=payload,
        headers={name.lower(): value for name, value in request.headers.items()},
    )
    return ok(WebhookReceived(duplicate=received.duplicate))


@router.post("/api/billing/webhook/{gateway}", response_model=Envelope[WebhookReceived])
async def gateway_webhook(
    gateway: str, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Envelope[WebhookReceived]:
    """A payment gateway's event (public; `stripe`, `razorpay` or `upi`). The signature is
    verified on the raw body (401 if it does not match); the event is stored once and the
    credit follows in a background job."""
    return await _receive(gateway, request, session, runtime)


@router.post("/api/payments/stripe/webhook", response_model=Envelope[WebhookReceived])
async def stripe_webhook(
    request: Request, session: SessionDep, runtime: RuntimeDep
) -> Envelope[WebhookReceived]:
    """mPanel's Stripe webhook: the same handler as `/api/billing/webhook/stripe`."""
    return await _receive("stripe", request, session, runtime)
