"""Razorpay payment links (UPI) through Razorpay's own Python SDK, pointed at ``api_base``.

The SDK is synchronous (it speaks through ``requests``): its calls run in a
worker thread so the event loop never waits on the gateway.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import razorpay
from razorpay.errors import BadRequestError, GatewayError, ServerError, SignatureVerificationError

from hostplane.commerce.payments.providers.base import (
    BadSignature,
    CheckoutLink,
    CheckoutRequest,
    GatewayAuthFailed,
    GatewayRejected,
    GatewayUnavailable,
    VerifiedEvent,
)
from hostplane.core.config import RazorpaySettings

PAID_EVENTS = frozenset({"payment_link.paid"})


class RazorpayGateway:
    """Payment links for top-ups and ``X-Razorpay-Signature`` webhooks."""

    kind = "razorpay"

    def __init__(self, settings: RazorpaySettings) -> None:
        if (
            settings.key_id is None
            or settings.key_secret is None
            or settings.webhook_secret is None
        ):
            raise ValueError("Razorpay is not configured")
        self._auth = (settings.key_id, settings.key_secret.get_secret_value())
        self._webhook_secret = settings.webhook_secret.get_secret_value()
        self._api_base = settings.api_base.rstrip("/")
        self._timeout = settings.timeout_seconds

    def _client(self) -> Any:
        return razorpay.Client(auth=self._auth, base_url=self._api_base)

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutLink:
        notes = {
            "topup_id": request.topup_id,
            "tenant_id": request.tenant_id,
            "user_id": request.user_id,
        }
        data: dict[str, Any] = {
            "amount": request.amount,
            "currency": request.currency,
            "accept_partial": False,
            "description": request.description,
            # Razorpay refuses a second link with the same reference: a retried
            # request cannot open two payment pages for one top-up.
            "reference_id": request.topup_id,
            "upi_link": True,
            "notes": notes,
            "callback_url": request.success_url,
            "callback_method": "get",
        }
        if request.customer_email:
            data["customer"] = {"email": request.customer_email}
            data["notify"] = {"email": False, "sms": False}
        client = self._client()
        try:
            link = await asyncio.to_thread(client.payment_link.create, data, timeout=self._timeout)
        except BadRequestError as exc:
            if "authentication" in str(exc).lower():
                raise GatewayAuthFailed("Razorpay refused the panel's key") from exc
            raise GatewayRejected(f"Razorpay refused the payment link: {exc}") from exc
        except (GatewayError, ServerError) as exc:
            raise GatewayUnavailable("Razorpay failed to answer; try again") from exc
        # requests' errors are OSErrors; a body that is not JSON is a ValueError.
        except (OSError, ValueError) as exc:
            raise GatewayUnavailable("Razorpay could not be reached; try again") from exc
        finally:
            client.session.close()
        if not isinstance(link, dict) or not link.get("id") or not link.get("short_url"):
            raise GatewayRejected("Razorpay answered without a payment link")
        return CheckoutLink(reference=str(link["id"]), url=str(link["short_url"]))

    def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> VerifiedEvent:
        signature = headers.get("x-razorpay-signature")
        if not signature:
            raise BadSignature("The X-Razorpay-Signature header is missing")
        try:
            text = payload.decode("utf-8")
            # HMAC-SHA256 of the raw body with the webhook secret, compared in
            # constant time by the SDK.
            self._client().utility.verify_webhook_signature(text, signature, self._webhook_secret)
            event = json.loads(text)
        except (SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
            raise BadSignature("The X-Razorpay-Signature header does not match the body") from exc
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            raise BadSignature("The signed body is not a Razorpay event")
        return read_event(event, headers.get("x-razorpay-event-id"))


def _entity(payload: Any, name: str) -> dict[str, Any]:
    holder = payload.get(name) if isinstance(payload, dict) else None
    entity = holder.get("entity") if isinstance(holder, dict) else None
    return entity if isinstance(entity, dict) else {}


def read_event(event: dict[str, Any], header_event_id: str | None) -> VerifiedEvent:
    """The fields hostplane acts on, from a verified Razorpay event.

    The event's id comes from the signed body (event, link and payment ids),
    not from the unsigned ``X-Razorpay-Event-Id`` header, so a replay with a
    changed header is still the same event.
    """
    event_type = str(event["event"])
    payload = event.get("payload")
    link = _entity(payload, "payment_link")
    payment = _entity(payload, "payment")
    parts = [event_type, str(link.get("id") or ""), str(payment.get("id") or "")]
    if not link and not payment:
        parts.append(header_event_id or str(event.get("created_at") or ""))
    notes = link.get("notes")
    topup_id = link.get("reference_id") or (
        notes.get("topup_id") if isinstance(notes, dict) else None
    )
    amount = link.get("amount_paid", link.get("amount"))
    currency = link.get("currency")
    paid = event_type in PAID_EVENTS and link.get("status") == "paid"
    return VerifiedEvent(
        event_id=":".join(parts),
        type=event_type,
        reference=str(link["id"]) if link.get("id") else None,
        topup_id=str(topup_id) if topup_id else None,
        amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
        currency=str(currency).upper() if currency else None,
        paid=paid,
        payload=event,
    )
