"""The ledger: exactly-once posting, never below zero, sums that hold."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.ledger import service as ledger
from hostplane.commerce.ledger.models import LedgerEntry, LedgerTransaction
from hostplane.commerce.ledger.service import IdempotencyKeyReused, Leg
from hostplane.commerce.ledger.verify import verify
from hostplane.commerce.wallet import service as wallet
from hostplane.commerce.wallet.service import InsufficientFunds
from hostplane.core.runtime import Runtime
from hostplane.identity.tenants.service import ensure_default_tenant
from hostplane.identity.users.models import User
from tests.support.factories import make_user


async def _user(db: AsyncSession) -> User:
    tenant = await ensure_default_tenant(db)
    user = await make_user(db, tenant=tenant)
    await db.commit()
    return user


async def _grant(runtime: Runtime, user: User, coins: int) -> None:
    async with runtime.unit_of_work() as session:
        await wallet.credit(
            session,
            tenant_id=user.tenant_id,
            user_id=user.id,
            currency="coins",
            amount=coins,
            kind="test.grant",
            key=f"grant:{user.id}:{coins}",
            source="rewards",
        )


async def _debit(
    session: AsyncSession, user: User, amount: int, key: str, kind: str = "test.spend"
) -> None:
    await wallet.debit(
        session,
        tenant_id=user.tenant_id,
        user_id=user.id,
        currency="coins",
        amount=amount,
        kind=kind,
        key=key,
        sink="sales",
    )


async def _balance(runtime: Runtime, user: User) -> wallet.Balances:
    async with runtime.unit_of_work(read_only=True) as session:
        return await wallet.balances(session, tenant_id=user.tenant_id, user_id=user.id)


async def test_a_hundred_concurrent_debits_never_overdraw(
    runtime: Runtime, db: AsyncSession
) -> None:
    user = await _user(db)
    await _grant(runtime, user, 1000)

    async def spend(n: int) -> bool:
        try:
            async with runtime.unit_of_work() as session:
                await _debit(session, user, 30, f"spend:{n}")
        except InsufficientFunds:
            return False
        return True

    results = await asyncio.gather(*(spend(n) for n in range(100)))
    # 1000 covers 33 debits of 30 and no more.
    assert sum(results) == 33
    assert (await _balance(runtime, user)).coins == 1000 - 33 * 30
    async with runtime.unit_of_work(read_only=True) as session:
        report = await verify(session)
    assert report.ok, report.problems
    assert report.transactions == 34


async def test_a_key_posts_once_and_a_reused_key_for_another_kind_is_refused(
    runtime: Runtime, db: AsyncSession
) -> None:
    user = await _user(db)
    for _ in range(3):
        await _grant(runtime, user, 500)
    assert (await _balance(runtime, user)).coins == 500
    async with runtime.unit_of_work() as session:
        with pytest.raises(IdempotencyKeyReused):
            await _debit(session, user, 1, f"grant:{user.id}:500")

    async def same_key() -> bool:
        async with runtime.unit_of_work() as session:
            result = await wallet.credit(
                session,
                tenant_id=user.tenant_id,
                user_id=user.id,
                currency="credits",
                amount=999,
                kind="topup",
                key="topup:racing",
                source="gateway:stripe",
            )
            return result.created

    created = await asyncio.gather(*(same_key() for _ in range(10)))
    assert created.count(True) == 1
    assert (await _balance(runtime, user)).credits == 999


async def test_a_refused_debit_writes_nothing_and_the_caller_may_go_on(
    runtime: Runtime, db: AsyncSession
) -> None:
    user = await _user(db)
    await _grant(runtime, user, 10)
    async with runtime.unit_of_work() as session:
        with pytest.raises(InsufficientFunds) as refused:
            await _debit(session, user, 11, "too-much")
        assert refused.value.status == 402 and refused.value.code == "INSUFFICIENT_FUNDS"
        assert refused.value.details["balance"] == "10"
        # The savepoint rolled back alone: the same transaction still works.
        await _debit(session, user, 10, "all-of-it")
    assert (await _balance(runtime, user)).coins == 0
    async with runtime.unit_of_work(read_only=True) as session:
        keys = set(await session.scalars(select(LedgerTransaction.idempotency_key)))
    assert "too-much" not in keys and "all-of-it" in keys


async def test_a_movement_is_reversed_once(runtime: Runtime, db: AsyncSession) -> None:
    user = await _user(db)
    await _grant(runtime, user, 100)
    async with runtime.unit_of_work() as session:
        await _debit(session, user, 60, "deploy:1", kind="server.deploy")
    for attempt in range(3):
        async with runtime.unit_of_work() as session:
            result = await wallet.reverse(
                session,
                tenant_id=user.tenant_id,
                original_key="deploy:1",
                key=f"deploy:1:refund:{attempt}",
                memo="placement failed",
            )
            assert result.created is (attempt == 0)
    assert (await _balance(runtime, user)).coins == 100
    async with runtime.unit_of_work(read_only=True) as session:
        assert (await verify(session)).ok


async def test_movements_must_balance_and_verify_finds_a_tampered_balance(
    runtime: Runtime, db: AsyncSession
) -> None:
    user = await _user(db)
    await _grant(runtime, user, 100)
    async with runtime.unit_of_work() as session:
        account = await wallet.user_account(
            session, tenant_id=user.tenant_id, user_id=user.id, currency="coins"
        )
        with pytest.raises(ValueError, match="sum to zero"):
            await ledger.post(
                session,
                tenant_id=user.tenant_id,
                kind="test.mint",
                key="mint",
                legs=[Leg(account, 5)],
            )
        entries = await session.scalar(select(func.count()).select_from(LedgerEntry))
        assert entries == 2
        # Someone edits a balance behind the ledger's back.
        account.balance = 1_000_000
    async with runtime.unit_of_work(read_only=True) as session:
        report = await verify(session)
    assert not report.ok
    assert "holds 1000000 but its entries sum to 100" in report.problems[0]
