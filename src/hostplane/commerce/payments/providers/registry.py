"""Which gateways exist, which top-up method each serves, and which are configured."""

from __future__ import annotations

from hostplane.commerce.payments.providers.base import PaymentGateway
from hostplane.commerce.payments.providers.razorpay import RazorpayGateway
from hostplane.commerce.payments.providers.stripe import StripeGateway
from hostplane.core.config import PaymentSettings

GATEWAYS: dict[str, type[StripeGateway] | type[RazorpayGateway]] = {
    "stripe": StripeGateway,
    "razorpay": RazorpayGateway,
}
# What a client asks for in ``POST /api/billing/top-up`` -> the gateway that serves it.
METHODS: dict[str, str] = {"stripe": "stripe", "upi": "razorpay"}
# Names a webhook URL may use for a gateway (``/webhook/upi`` is Razorpay too).
WEBHOOK_NAMES: dict[str, str] = {"stripe": "stripe", "razorpay": "razorpay", "upi": "razorpay"}


def is_configured(settings: PaymentSettings, kind: str) -> bool:
    if kind == "stripe":
        return settings.stripe.configured
    if kind == "razorpay":
        return settings.razorpay.configured
    return False


def gateway(settings: PaymentSettings, kind: str) -> PaymentGateway | None:
    """The configured gateway ``kind``, or ``None`` when it has no keys."""
    if not is_configured(settings, kind):
        return None
    if kind == "stripe":
        return StripeGateway(settings.stripe)
    if kind == "razorpay":
        return RazorpayGateway(settings.razorpay)
    return None


def offered_methods(settings: PaymentSettings) -> list[str]:
    """The top-up methods a client may choose now."""
    return [method for method, kind in METHODS.items() if is_configured(settings, kind)]
