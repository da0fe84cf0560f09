"""What a payment gateway does for hostplane, and how its failures look.

Each adapter wraps the gateway's official SDK; no vendor exception leaves an
adapter: it becomes :class:`GatewayUnavailable` (try again later),
:class:`GatewayAuthFailed` (the configured keys are wrong) or
:class:`GatewayRejected` (the gateway refused the request for good). A
webhook whose signature does not verify is :class:`BadSignature`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from hostplane.core.errors import HostplaneError, ProviderUnavailable, Unauthorized


class GatewayUnavailable(ProviderUnavailable):
    """The gateway could not be reached or answered 5xx; the caller may retry."""

    code = "GATEWAY_UNAVAILABLE"


class GatewayAuthFailed(ProviderUnavailable):
    """The gateway refused the panel's credentials: an operator must fix the keys."""

    code = "GATEWAY_AUTH_FAILED"


class GatewayRejected(HostplaneError):
    """The gateway refused the request itself (amount, currency, parameters)."""

    status = 502
    code = "GATEWAY_REJECTED"


class BadSignature(Unauthorized):
    """A webhook body whose signature does not verify with the configured secret."""

    code = "INVALID_SIGNATURE"


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """One top-up to charge: ``amount`` in minor units of ``currency``."""

    topup_id: str
    tenant_id: str
    user_id: str
    amount: int
    currency: str
    description: str
    success_url: str
    cancel_url: str
    customer_email: str | None = None
    # Sent to the gateway so a retried request creates no second payment page.
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class CheckoutLink:
    """The gateway's payment page for a top-up."""

    reference: str
    url: str


@dataclass(frozen=True, slots=True)
class VerifiedEvent:
    """A gateway event whose signature verified.

    ``paid`` says the event reports money received for ``reference`` (the
    session or link id the panel stored); ``amount`` and ``currency`` are the
    gateway's figures, in minor units.
    """

    event_id: str
    type: str
    reference: str | None
    topup_id: str | None
    amount: int | None
    currency: str | None
    paid: bool
    payload: dict[str, Any] = field(default_factory=dict)


class PaymentGateway(Protocol):
    """A configured payment gateway."""

    kind: str

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutLink:
        """Create the payment page for ``request``.

        Raises :class:`GatewayUnavailable`, :class:`GatewayAuthFailed` or
        :class:`GatewayRejected`.
        """
        ...

    def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> VerifiedEvent:
        """Check the webhook's signature on the raw body and read the event.

        Raises :class:`BadSignature` when the signature (or the body it covers)
        is not the gateway's.
        """
        ...
