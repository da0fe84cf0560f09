"""The harness's Prices and Checkout Sessions answer the real stripe library like Stripe."""

from __future__ import annotations

import pytest
import stripe

from tests.support.stripe_emulator import SECRET_KEY, pay


async def test_prices_and_checkout_sessions_round_trip_through_the_sdk(stripe_api: str) -> None:
    http = stripe.HTTPXClient(timeout=10)
    client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": stripe_api}, http_client=http)
    try:
        price = await client.v1.prices.create_async(
            {"currency": "usd", "unit_amount": 700, "product_data": {"name": "Credits"}}
        )
        assert (price.object, price.unit_amount, price.currency) == ("price", 700, "usd")
        assert (await client.v1.prices.retrieve_async(price.id)).id == price.id
        session = await client.v1.checkout.sessions.create_async(
            {
                "mode": "payment",
                "success_url": "https://panel.example/ok",
                "cancel_url": "https://panel.example/no",
                "client_reference_id": "topup-1",
                "line_items": [{"price": price.id, "quantity": 3}],
            },
            {"idempotency_key": "same"},
        )
        assert session.object == "checkout.session"
        assert (session.amount_total, session.status, session.payment_status) == (
            2100,
            "open",
            "unpaid",
        )
        again = await client.v1.checkout.sessions.create_async(
            {"mode": "payment", "success_url": "https://x", "line_items": [{"price": price.id}]},
            {"idempotency_key": "same"},
        )
        assert again.id == session.id
        items = await client.v1.checkout.sessions.line_items.list_async(session.id)
        assert [item.quantity for item in items.data] == [3]
        event = pay(stripe_api, session.id)
        assert event["type"] == "checkout.session.completed"
        paid = await client.v1.checkout.sessions.retrieve_async(session.id)
        assert (paid.status, paid.payment_status) == ("complete", "paid")
        with pytest.raises(stripe.InvalidRequestError, match="success_url"):
            await client.v1.checkout.sessions.create_async({"mode": "payment"})
    finally:
        await http.close_async()
