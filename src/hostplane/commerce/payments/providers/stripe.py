"""Stripe Checkout through Stripe's own Python SDK, pointed at ``api_base``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import stripe

from hostplane.commerce.payments.providers.base import (
    BadSignature,
    CheckoutLink,
    CheckoutRequest,
    GatewayAuthFailed,
    GatewayRejected,
    GatewayUnavailable,
    VerifiedEvent,
)
from hostplane.core.config import StripeSettings

# Stripe signs the time with the body; older deliveries are refused (replays).
SIGNATURE_TOLERANCE_SECONDS = 300
# Events that report money received for a Checkout Session (the second one
# for payment methods that settle later than the session completes).
PAID_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})


class StripeGateway:
    """Checkout Sessions for top-ups and ``Stripe-Signature`` webhooks."""

    kind = "stripe"

    def __init__(self, settings: StripeSettings) -> None:
        if settings.secret_key is None or settings.webhook_secret is None:
            raise ValueError("Stripe is not configured")
        self._secret_key = settings.secret_key.get_secret_value()
        self._webhook_secret = settings.webhook_secret.get_secret_value()
        self._api_base = settings.api_base.rstrip("/")
        self._timeout = settings.timeout_seconds

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutLink:
        http = stripe.HTTPXClient(timeout=self._timeout)
        client = stripe.StripeClient(
            self._secret_key,
            base_addresses={"api": self._api_base},
            http_client=http,
            # The request carries an idempotency key: Stripe's own retries are safe.
            max_network_retries=2,
        )
        options: stripe.RequestOptions = {}
        if request.idempotency_key:
            options["idempotency_key"] = request.idempotency_key
        metadata = {
            "topup_id": request.topup_id,
            "tenant_id": request.tenant_id,
            "user_id": request.user_id,
        }
        params: dict[str, Any] = {
            "mode": "payment",
            "client_reference_id": request.topup_id,
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": request.amount,
                        "product_data": {"name": request.description},
                    },
                }
            ],
        }
        if request.customer_email:
            params["customer_email"] = request.customer_email
        try:
            session = await client.v1.checkout.sessions.create_async(
                params,  # type: ignore[arg-type]  # a plain dict of the documented fields
                options,
            )
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            raise GatewayAuthFailed("Stripe refused the panel's secret key") from exc
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            raise GatewayUnavailable("Stripe could not be reached; try again") from exc
        except stripe.InvalidRequestError as exc:
            raise GatewayRejected(f"Stripe refused the payment: {exc.user_message or exc}") from exc
        except stripe.StripeError as exc:
            raise GatewayUnavailable("Stripe failed to answer; try again") from exc
        finally:
            await http.close_async()  # type: ignore[no-untyped-call]
        if not session.id or not session.url:
            raise GatewayRejected("Stripe answered without a payment page")
        return CheckoutLink(reference=session.id, url=session.url)

    def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> VerifiedEvent:
        try:
            text = payload.decode("utf-8")
            stripe.WebhookSignature.verify_header(
                text,
                headers.get("stripe-signature"),
                self._webhook_secret,
                SIGNATURE_TOLERANCE_SECONDS,
            )
            event = json.loads(text)
        except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
            raise BadSignature("The Stripe-Signature header does not match the body") from exc
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            raise BadSignature("The signed body is not a Stripe event")
        return read_event(event)


def read_event(event: dict[str, Any]) -> VerifiedEvent:
    """The fields hostplane acts on, from a verified Stripe event."""
    event_type = str(event.get("type") or "")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict) or obj.get("object") != "checkout.session":
        return VerifiedEvent(
            event_id=str(event["id"]),
            type=event_type,
            reference=None,
            topup_id=None,
            amount=None,
            currency=None,
            paid=False,
            payload=event,
        )
    metadata = obj.get("metadata")
    topup_id = obj.get("client_reference_id") or (
        metadata.get("topup_id") if isinstance(metadata, dict) else None
    )
    amount = obj.get("amount_total")
    currency = obj.get("currency")
    return VerifiedEvent(
        event_id=str(event["id"]),
        type=event_type,
        reference=str(obj["id"]) if obj.get("id") else None,
        topup_id=str(topup_id) if topup_id else None,
        amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
        currency=str(currency).upper() if currency else None,
        paid=event_type in PAID_EVENTS and obj.get("payment_status") == "paid",
        payload=event,
    )
