"""Top-ups by UPI through Razorpay payment links (the real razorpay library against the emulator)."""

from __future__ import annotations

import asyncio
import json

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.payments.models import PaymentEvent, TopUp
from hostplane.commerce.wallet import service as wallet
from hostplane.core.runtime import Runtime
from hostplane.platform.jobs.worker import Worker
from tests.support.identity import logged_in
from tests.support.razorpay_emulator import RazorpayEmulator, sign


async def test_a_upi_top_up_is_credited_once_by_payment_link_paid(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, razorpay_api: RazorpayEmulator
) -> None:
    buyer = await logged_in(client, db)
    response = await client.post(
        "/api/billing/top-up", json={"amount": "250", "gateway": "upi"}, headers=buyer.headers
    )
    assert response.status_code == 200, response.text
    topup = response.json()["data"]
    assert topup["gateway"] == "upi"
    assert topup["reference"].startswith("plink_")
    assert topup["paymentUrl"].startswith(razorpay_api.base_url)
    link = razorpay_api.links[topup["reference"]]
    assert (link["amount"], link["reference_id"], link["upi_link"]) == (25000, topup["id"], True)
    row = await db.get(TopUp, topup["id"])
    assert row is not None and (row.gateway, row.method, row.amount) == ("razorpay", "upi", 25000)
    await db.commit()

    body, headers = razorpay_api.paid_webhook(topup["reference"])
    first = await client.post("/api/billing/webhook/razorpay", content=body, headers=headers)
    assert first.status_code == 200, first.text
    # Razorpay redelivers with the same body; replays and concurrent copies, on both names.
    for _ in range(9):
        again = await client.post("/api/billing/webhook/razorpay", content=body, headers=headers)
        assert again.json()["data"]["duplicate"] is True
    answers = await asyncio.gather(
        *(client.post("/api/billing/webhook/upi", content=body, headers=headers) for _ in range(10))
    )
    assert {a.status_code for a in answers} == {200}
    await Worker(runtime).run_until_idle()

    await db.commit()
    balances = await wallet.balances(db, tenant_id=buyer.user.tenant_id, user_id=buyer.user.id)
    assert balances.credits == 25000
    assert await db.scalar(select(func.count()).select_from(PaymentEvent)) == 1
    paid = await db.get(TopUp, topup["id"], populate_existing=True)
    assert paid is not None and paid.status == "paid"
    await db.commit()


async def test_a_razorpay_body_with_a_bad_signature_is_refused(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, razorpay_api: RazorpayEmulator
) -> None:
    buyer = await logged_in(client, db)
    response = await client.post(
        "/api/billing/top-up", json={"amount": "10", "gateway": "upi"}, headers=buyer.headers
    )
    reference = response.json()["data"]["reference"]
    body, headers = razorpay_api.paid_webhook(reference)
    event = json.loads(body)
    event["payload"]["payment_link"]["entity"]["amount_paid"] = 10**9
    forged = json.dumps(event).encode()
    for sent, signature in (
        (forged, headers["X-Razorpay-Signature"]),
        (body, sign(body, "not-the-secret")),
        (body, ""),
    ):
        answer = await client.post(
            "/api/billing/webhook/razorpay",
            content=sent,
            headers={"X-Razorpay-Signature": signature, "Content-Type": "application/json"},
        )
        assert answer.status_code == 401, answer.text
    await Worker(runtime).run_until_idle()
    await db.commit()
    assert await db.scalar(select(func.count()).select_from(PaymentEvent)) == 0
    balances = await wallet.balances(db, tenant_id=buyer.user.tenant_id, user_id=buyer.user.id)
    assert balances.credits == 0
    await db.commit()
