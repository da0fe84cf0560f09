"""Top-ups through Stripe Checkout (the real stripe library against the emulator)."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.invoices.models import Invoice
from hostplane.commerce.payments import service as payments
from hostplane.commerce.payments.models import PaymentEvent, TopUp
from hostplane.commerce.wallet import service as wallet
from hostplane.core.runtime import Runtime
from hostplane.platform.jobs.models import Job
from hostplane.platform.jobs.worker import Worker
from tests.support.identity import LoggedIn, logged_in
from tests.support.payments import stripe_signed
from tests.support.processes import free_port
from tests.support.stripe_emulator import pay


async def _top_up(
    client: httpx.AsyncClient, buyer: LoggedIn, amount: Any = "12.50", **headers: str
) -> dict[str, Any]:
    response = await client.post(
        "/api/billing/top-up",
        json={"amount": amount, "gateway": "stripe"},
        headers={**buyer.headers, **headers},
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def _credits(db: AsyncSession, buyer: LoggedIn) -> int:
    await db.commit()
    balances = await wallet.balances(db, tenant_id=buyer.user.tenant_id, user_id=buyer.user.id)
    await db.commit()
    return balances.credits


async def _count(db: AsyncSession, model: Any, *where: Any) -> int:
    await db.commit()
    value = await db.scalar(select(func.count()).select_from(model).where(*where))
    await db.commit()
    return int(value or 0)


async def _post(
    client: httpx.AsyncClient,
    signed: tuple[bytes, dict[str, str]],
    path: str = "/api/billing/webhook/stripe",
) -> httpx.Response:
    body, headers = signed
    return await client.post(path, content=body, headers=headers)


async def test_a_top_up_is_credited_once_by_its_signed_webhook(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, stripe_api: str
) -> None:
    buyer = await logged_in(client, db)
    topup = await _top_up(client, buyer)
    assert topup["status"] == "pending"
    assert topup["amount"] == 12.5 and topup["amountMinor"] == 1250
    assert topup["currency"] == "USD"
    assert topup["reference"].startswith("cs_test_")
    assert topup["paymentUrl"].startswith(stripe_api)
    row = await db.get(TopUp, topup["id"])
    assert row is not None and row.gateway_reference == topup["reference"]
    assert (row.user_id, row.amount, row.currency, row.status) == (
        buyer.user.id,
        1250,
        "USD",
        "pending",
    )
    await db.commit()

    event = pay(stripe_api, topup["reference"])
    answer = await _post(client, stripe_signed(event))
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"received": True, "duplicate": False}
    # Answered at once: the credit is the job's.
    assert await _credits(db, buyer) == 0
    await Worker(runtime).run_until_idle()
    assert await _credits(db, buyer) == 1250

    row = await db.get(TopUp, topup["id"], populate_existing=True)
    assert row is not None and row.status == "paid" and row.invoice_id is not None
    await db.commit()
    listed = await client.get("/api/billing/invoices", headers=buyer.headers)
    assert listed.status_code == 200, listed.text
    [invoice] = listed.json()["data"]
    assert invoice["number"] == "INV-000001"
    assert (invoice["status"], invoice["amount"], invoice["currency"]) == ("paid", 12.5, "USD")
    pdf = await client.get(invoice["pdfUrl"], headers=buyer.headers)
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")


async def test_replayed_and_concurrent_webhooks_credit_once(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, stripe_api: str
) -> None:
    buyer = await logged_in(client, db)
    topup = await _top_up(client, buyer, amount=20)
    event = pay(stripe_api, topup["reference"])
    for _ in range(10):
        assert (await _post(client, stripe_signed(event))).status_code == 200
    # The same event through mPanel's route is the same handler.
    again = await _post(client, stripe_signed(event), "/api/payments/stripe/webhook")
    assert again.json()["data"]["duplicate"] is True
    answers = await asyncio.gather(*(_post(client, stripe_signed(event)) for _ in range(10)))
    assert {a.status_code for a in answers} == {200}
    await Worker(runtime).run_until_idle()
    # A second event about the same payment (sent later by Stripe for slow methods)
    # meets the paid top-up; so do the replays of it, concurrently with their job.
    later = copy.deepcopy(event)
    later["id"] = event["id"] + "x"
    later["type"] = "checkout.session.async_payment_succeeded"
    answers = await asyncio.gather(*(_post(client, stripe_signed(later)) for _ in range(10)))
    assert {a.status_code for a in answers} == {200}
    await Worker(runtime).run_until_idle()

    assert await _credits(db, buyer) == 2000
    assert await _count(db, PaymentEvent) == 2
    assert await _count(db, Invoice, Invoice.user_id == buyer.user.id) == 1
    assert await _count(db, Job, Job.type == "payments.apply_event") == 2


@pytest.mark.parametrize(
    "tamper",
    ["bad_signature", "other_secret", "no_header", "stale", "changed_body"],
)
async def test_a_webhook_that_does_not_verify_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, stripe_api: str, tamper: str
) -> None:
    buyer = await logged_in(client, db)
    topup = await _top_up(client, buyer)
    event = pay(stripe_api, topup["reference"])
    body, headers = stripe_signed(event)
    if tamper == "bad_signature":
        headers["Stripe-Signature"] = headers["Stripe-Signature"][:-4] + "0000"
    elif tamper == "other_secret":
        body, headers = stripe_signed(event, secret="whsec_someone_else")
    elif tamper == "no_header":
        del headers["Stripe-Signature"]
    elif tamper == "stale":
        body, headers = stripe_signed(event, timestamp=int(time.time()) - 301)
    else:
        body = body.replace(b'"paid"', b'"paid" ', 1)
    answer = await client.post("/api/billing/webhook/stripe", content=body, headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "INVALID_SIGNATURE"
    await Worker(runtime).run_until_idle()
    assert await _count(db, PaymentEvent) == 0
    assert await _count(db, Job, Job.type == "payments.apply_event") == 0
    assert await _credits(db, buyer) == 0


async def test_an_unknown_gateway_is_400_and_changes_nothing(
    client: httpx.AsyncClient, db: AsyncSession, stripe_api: str
) -> None:
    buyer = await logged_in(client, db)
    topup = await _top_up(client, buyer)
    body, headers = stripe_signed(pay(stripe_api, topup["reference"]))
    for gateway in ("paypal", "STRIPE", "stripe2"):
        answer = await client.post(f"/api/billing/webhook/{gateway}", content=body, headers=headers)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "UNKNOWN_GATEWAY"
    # A Stripe event sent to the Razorpay webhook does not verify there.
    answer = await client.post("/api/billing/webhook/razorpay", content=body, headers=headers)
    assert answer.status_code == 401
    assert await _count(db, PaymentEvent) == 0


async def test_an_event_whose_amount_differs_from_the_top_up_credits_nothing(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, stripe_api: str
) -> None:
    buyer = await logged_in(client, db)
    topup = await _top_up(client, buyer, amount="5")
    event = pay(stripe_api, topup["reference"])
    event["data"]["object"]["amount_total"] = 500000
    assert (await _post(client, stripe_signed(event))).status_code == 200
    await Worker(runtime).run_until_idle()
    assert await _credits(db, buyer) == 0
    stored = await db.scalar(select(PaymentEvent))
    assert stored is not None and stored.status == "rejected"
    await db.commit()


async def test_events_that_are_not_payments_are_stored_and_ignored(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    event = {
        "id": "evt_other",
        "object": "event",
        "type": "customer.created",
        "data": {"object": {"object": "customer", "id": "cus_1"}},
    }
    answer = await _post(client, stripe_signed(event))
    assert answer.status_code == 200
    await Worker(runtime).run_until_idle()
    stored = await db.scalar(select(PaymentEvent))
    assert stored is not None and stored.status == "ignored"
    await db.commit()
    assert await _count(db, Job, Job.type == "payments.apply_event") == 0


async def test_the_idempotency_key_answers_the_first_payment_page_again(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    buyer = await logged_in(client, db)
    first = await _top_up(client, buyer, **{"Idempotency-Key": "topup-key-1"})
    second = await _top_up(client, buyer, **{"Idempotency-Key": "topup-key-1"})
    assert second == first
    assert await _count(db, TopUp) == 1
    reused = await client.post(
        "/api/billing/top-up",
        json={"amount": "13", "gateway": "stripe"},
        headers={**buyer.headers, "Idempotency-Key": "topup-key-1"},
    )
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        ("0.001", "VALIDATION_ERROR"),
        ("abc", "VALIDATION_ERROR"),
        (0, "VALIDATION_ERROR"),
        (-5, "VALIDATION_ERROR"),
        ("NaN", "VALIDATION_ERROR"),
        ("1e400", "VALIDATION_ERROR"),
        (True, "VALIDATION_ERROR"),
        ("0.50", "AMOUNT_OUT_OF_RANGE"),
        ("10000.01", "AMOUNT_OUT_OF_RANGE"),
    ],
)
async def test_amounts_outside_the_limits_or_not_exact_are_400(
    client: httpx.AsyncClient, db: AsyncSession, amount: Any, code: str
) -> None:
    buyer = await logged_in(client, db)
    answer = await client.post(
        "/api/billing/top-up", json={"amount": amount, "gateway": "stripe"}, headers=buyer.headers
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == code
    assert await _count(db, TopUp) == 0


async def test_a_json_number_amount_is_read_exactly(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    buyer = await logged_in(client, db)
    topup = await _top_up(client, buyer, amount=19.99)
    assert topup["amountMinor"] == 1999


async def test_an_event_for_an_unknown_session_is_retried_then_kept_unmatched(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, stripe_api: str
) -> None:
    buyer = await logged_in(client, db)
    topup = await _top_up(client, buyer)
    event = pay(stripe_api, topup["reference"])
    event["data"]["object"]["id"] = "cs_test_nobody"
    assert (await _post(client, stripe_signed(event))).status_code == 200
    await Worker(runtime).run_until_idle()
    # The top-up may not be committed yet when a fast payer's event arrives: retried.
    job = await db.scalar(select(Job).where(Job.type == "payments.apply_event"))
    assert job is not None and job.status == "queued" and job.attempts == 1
    await db.commit()
    # Its last attempt keeps the event as unmatched, for an operator.
    async with runtime.unit_of_work() as session:
        stored = await session.scalar(select(PaymentEvent))
        assert stored is not None and stored.status == "received"
        assert await payments.apply_event(session, stored.id, final=True) == "unmatched"
    assert await _credits(db, buyer) == 0


async def test_an_unreachable_gateway_is_503_and_records_nothing(
    client: httpx.AsyncClient, db: AsyncSession, settings: Any
) -> None:
    settings.payments.stripe.api_base = f"http://127.0.0.1:{free_port()}"
    buyer = await logged_in(client, db)
    answer = await client.post(
        "/api/billing/top-up", json={"amount": "10", "gateway": "stripe"}, headers=buyer.headers
    )
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "GATEWAY_UNAVAILABLE"
    assert await _count(db, TopUp) == 0


async def test_a_credit_purchase_clears_the_buyers_pending_referral(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, stripe_api: str
) -> None:
    referrer = await logged_in(client, db)
    newcomer = await logged_in(client, db)
    code = (await client.get("/api/economy/earn/referral", headers=referrer.headers)).json()[
        "data"
    ]["code"]
    claimed = await client.post(
        "/api/economy/earn/referral", json={"code": code}, headers=newcomer.headers
    )
    assert claimed.json()["data"]["referralStatus"] == "pending"
    topup = await _top_up(client, newcomer, amount=3)
    event = pay(stripe_api, topup["reference"])
    for _ in range(3):
        assert (await _post(client, stripe_signed(event))).status_code == 200
    await Worker(runtime).run_until_idle()
    status = await client.get("/api/economy/earn/referral", headers=newcomer.headers)
    assert status.json()["data"]["referralStatus"] == "cleared"
    wallet = (await client.get("/api/economy/wallet", headers=newcomer.headers)).json()["data"]
    assert wallet["credits"] == 3
    assert wallet["coins"] > 0
