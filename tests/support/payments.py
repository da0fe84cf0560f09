"""Gateway settings pointed at the local emulators, signed webhooks, paid invoices."""

from __future__ import annotations

import json
import time
from typing import Any

import stripe
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.invoices import service as invoices
from hostplane.commerce.invoices.models import Invoice
from hostplane.core.config import PaymentSettings, RazorpaySettings, StripeSettings
from hostplane.identity.users.models import User
from tests.support import razorpay_emulator
from tests.support.stripe_emulator import SECRET_KEY

STRIPE_WEBHOOK_SECRET = "whsec_hostplane_emulator_secret"


def gateway_settings(
    *, stripe_base: str | None = None, razorpay_base: str | None = None
) -> PaymentSettings:
    """Payments with Stripe and/or Razorpay pointed at the emulators (none when not given)."""
    stripe_settings = StripeSettings()
    if stripe_base is not None:
        stripe_settings = StripeSettings(
            secret_key=SECRET_KEY,  # type: ignore[arg-type]
            webhook_secret=STRIPE_WEBHOOK_SECRET,  # type: ignore[arg-type]
            api_base=stripe_base,
        )
    razorpay_settings = RazorpaySettings()
    if razorpay_base is not None:
        razorpay_settings = RazorpaySettings(
            key_id=razorpay_emulator.KEY_ID,
            key_secret=razorpay_emulator.KEY_SECRET,  # type: ignore[arg-type]
            webhook_secret=razorpay_emulator.WEBHOOK_SECRET,  # type: ignore[arg-type]
            api_base=razorpay_base,
        )
    return PaymentSettings(stripe=stripe_settings, razorpay=razorpay_settings)


def stripe_signed(
    event: dict[str, Any], *, secret: str = STRIPE_WEBHOOK_SECRET, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers Stripe sends for ``event`` (signature made by stripe's library)."""
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(
        body, secret, timestamp=int(time.time()) if timestamp is None else timestamp
    )
    return body.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


async def make_paid_invoice(
    db: AsyncSession, *, user: User, amount: int = 1000, currency: str = "USD"
) -> Invoice:
    """A paid, numbered invoice of ``user`` (as a credited top-up leaves)."""
    invoice = await invoices.issue_paid(
        db,
        tenant_id=user.tenant_id,
        user_id=user.id,
        currency=currency,
        lines=[invoices.LineItem(description="Credits top-up", unit_amount=amount)],
        source="topup",
        source_id=f"test-{user.id}-{time.monotonic_ns()}",
        method="stripe",
        reference="cs_test_factory",
    )
    await db.commit()
    return invoice
