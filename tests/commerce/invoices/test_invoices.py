"""Invoices: gap-free numbers per tenant, the caller's own list, the PDF."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.invoices import service as invoices
from hostplane.core.runtime import Runtime
from tests.support.factories import make_tenant, make_user
from tests.support.identity import logged_in
from tests.support.payments import make_paid_invoice


async def test_numbers_are_gap_free_per_tenant(db: AsyncSession, runtime: Runtime) -> None:
    home = await make_tenant(db, name="Home")
    away = await make_tenant(db, name="Away")
    alice = await make_user(db, tenant=home)
    bob = await make_user(db, tenant=away)
    numbers = [
        (await make_paid_invoice(db, user=user)).number for user in (alice, alice, bob, alice, bob)
    ]
    assert numbers == [1, 2, 1, 3, 2]

    # A payment whose transaction rolls back gives its number back.
    async with runtime.sessions() as session:
        await invoices.next_number(session, home.id)
        await session.rollback()
    assert (await make_paid_invoice(db, user=alice)).number == 4


async def test_concurrent_payments_take_distinct_numbers(
    db: AsyncSession, runtime: Runtime
) -> None:
    home = await make_tenant(db, name="Busy")
    users = [await make_user(db, tenant=home) for _ in range(6)]

    async def pay(index: int) -> int:
        async with runtime.unit_of_work() as session:
            invoice = await invoices.issue_paid(
                session,
                tenant_id=home.id,
                user_id=users[index].id,
                currency="USD",
                lines=[invoices.LineItem(description="Credits", unit_amount=100)],
                source="topup",
                source_id=f"concurrent-{index}",
            )
            assert invoice.number is not None
            return invoice.number

    numbers = await asyncio.gather(*(pay(i) for i in range(6)))
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]


async def test_the_list_is_the_callers_own_and_paginated(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await logged_in(client, db)
    other = await logged_in(client, db)
    for amount in (100, 250, 999):
        await make_paid_invoice(db, user=owner.user, amount=amount)
    theirs = await make_paid_invoice(db, user=other.user)
    first = await client.get("/api/billing/invoices", params={"limit": 2}, headers=owner.headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["pagination"] == {"page": 1, "limit": 2, "total": 3, "pages": 2}
    assert [i["amount"] for i in body["data"]] == [9.99, 2.5]
    assert body["data"][0]["description"] == "Credits top-up"
    assert {"id", "amount", "status", "dueDate", "createdAt", "currency", "pdfUrl"} <= set(
        body["data"][0]
    )
    mine = await client.get(body["data"][0]["pdfUrl"], headers=owner.headers)
    assert mine.status_code == 200 and mine.content.startswith(b"%PDF")
    refused = await client.get(f"/api/billing/invoices/{theirs.id}/pdf", headers=owner.headers)
    assert refused.status_code == 404
