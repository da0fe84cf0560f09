"""Posting movements to the ledger, exactly once, never overdrawing a wallet.

Every movement is one :func:`post`: a transaction row under a unique
idempotency key and its entries, which sum to zero in each currency. Posting
a key that is already posted moves nothing and returns the first transaction,
so a retried job, a replayed webhook or a double click cannot pay twice: the
database's unique index decides, not a check that a concurrent writer could
slip past. A debit is a conditional ``UPDATE ... WHERE balance >= amount``:
under any number of concurrent debits the row lock (PostgreSQL) or the write
lock (SQLite) serialises them and the losers find too little and stop.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from hostplane.commerce.ledger.models import (
    SYSTEM_OWNER,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
)
from hostplane.core.errors import Conflict, PaymentRequired
from hostplane.core.ids import new_id
from hostplane.core.money import to_major


class InsufficientFunds(PaymentRequired):
    """A debit larger than the wallet's balance (402 ``INSUFFICIENT_FUNDS``)."""


class IdempotencyKeyReused(Conflict):
    """A key already posted for a different movement."""

    code = "IDEMPOTENCY_KEY_REUSED"


@dataclass(frozen=True, slots=True)
class Leg:
    account: LedgerAccount
    # Minor units; positive adds to the account, negative takes from it.
    amount: int


@dataclass(frozen=True, slots=True)
class PostResult:
    transaction: LedgerTransaction
    # False when the key had been posted before: nothing moved this time.
    created: bool


async def account(
    session: AsyncSession,
    *,
    tenant_id: str,
    owner: str,
    name: str,
    currency: str,
) -> LedgerAccount:
    """The account, created on first use (safe against a concurrent first use)."""
    found = await _find_account(session, tenant_id, owner, name)
    if found is None:
        values = {
            "tenant_id": tenant_id,
            "owner": owner,
            "name": name,
            "currency": currency,
            "balance": 0,
            "allow_negative": owner == SYSTEM_OWNER,
        }
        dialect = session.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        await session.execute(
            insert(LedgerAccount)
            .values(id=new_id(), **values)
            .on_conflict_do_nothing(index_elements=["tenant_id", "owner", "name"])
        )
        found = await _find_account(session, tenant_id, owner, name)
        if found is None:  # pragma: no cover - inserted or already there
            raise RuntimeError(f"ledger account {owner}/{name} vanished while being created")
    if found.currency != currency:
        raise ValueError(f"account {owner}/{name} is in {found.currency}, not {currency}")
    return found


async def system_account(
    session: AsyncSession, *, tenant_id: str, name: str, currency: str
) -> LedgerAccount:
    return await account(
        session, tenant_id=tenant_id, owner=SYSTEM_OWNER, name=name, currency=currency
    )


async def post(
    session: AsyncSession,
    *,
    tenant_id: str,
    kind: str,
    key: str,
    legs: Sequence[Leg],
    reference: str | None = None,
    memo: str | None = None,
    actor_user_id: str | None = None,
    reverses_id: str | None = None,
) -> PostResult:
    """Post one movement, or find the one already posted under ``key``.

    Raises :class:`InsufficientFunds` (and writes nothing) when a leg would take
    an account that may not go negative below zero, and
    :class:`IdempotencyKeyReused` when ``key`` was posted for another kind of
    movement. Legs must sum to zero in each currency.
    """
    _check_balanced(legs)
    existing = await _find_transaction(session, tenant_id, key)
    if existing is not None:
        return _replayed(existing, kind)
    try:
        # A savepoint: a refused debit or a lost race leaves the caller's
        # transaction as it was, so it may answer the error or go on.
        async with session.begin_nested():
            transaction = LedgerTransaction(
                tenant_id=tenant_id,
                kind=kind,
                idempotency_key=key,
                reference=reference,
                memo=memo,
                actor_user_id=actor_user_id,
                reverses_id=reverses_id,
            )
            session.add(transaction)
            await session.flush()
            # One order for every writer, so two movements never wait on each
            # other's rows (no deadlock on PostgreSQL).
            for leg in sorted(legs, key=lambda leg: leg.account.id):
                balance_after = await _apply(session, leg)
                session.add(
                    LedgerEntry(
                        tenant_id=tenant_id,
                        transaction_id=transaction.id,
                        account_id=leg.account.id,
                        currency=leg.account.currency,
                        amount=leg.amount,
                        balance_after=balance_after,
                    )
                )
            await session.flush()
    except IntegrityError:
        # Another writer posted the same key (or reversed the same movement)
        # first: theirs is the movement.
        _forget_balances(session, legs)
        existing = await _find_transaction(session, tenant_id, key)
        if existing is None and reverses_id is not None:
            existing = await session.scalar(
                select(LedgerTransaction).where(LedgerTransaction.reverses_id == reverses_id)
            )
        if existing is None:
            raise
        return _replayed(existing, kind)
    except BaseException:
        _forget_balances(session, legs)
        raise
    return PostResult(transaction, created=True)


def _forget_balances(session: AsyncSession, legs: Sequence[Leg]) -> None:
    # The savepoint undid the balances written in it; the accounts in memory
    # learn them again from the next query that loads them.
    for leg in legs:
        session.expire(leg.account, ["balance"])


async def entries_of(session: AsyncSession, transaction_id: str) -> list[LedgerEntry]:
    found = await session.scalars(
        select(LedgerEntry).where(LedgerEntry.transaction_id == transaction_id)
    )
    return list(found)


async def find_transaction(
    session: AsyncSession, *, tenant_id: str, key: str
) -> LedgerTransaction | None:
    return await _find_transaction(session, tenant_id, key)


async def _apply(session: AsyncSession, leg: Leg) -> int:
    statement = update(LedgerAccount).where(LedgerAccount.id == leg.account.id)
    if leg.amount < 0 and not leg.account.allow_negative:
        statement = statement.where(LedgerAccount.balance >= -leg.amount)
    result = await session.execute(
        statement.values(balance=LedgerAccount.balance + leg.amount)
        .returning(LedgerAccount.balance)
        .execution_options(synchronize_session=False)
    )
    balance = result.scalar_one_or_none()
    if balance is None:
        account = leg.account
        have = await session.scalar(
            select(LedgerAccount.balance).where(LedgerAccount.id == account.id)
        )
        raise InsufficientFunds(
            f"Not enough {account.name}: {-leg.amount} needed",
            details={
                "currency": account.name,
                "needed": str(to_major(-leg.amount, account.currency)),
                "balance": str(to_major(int(have or 0), account.currency)),
            },
        )
    # The row changed under the ORM's feet: tell the identity map without
    # marking the account dirty (a flush must not write the old value back).
    set_committed_value(leg.account, "balance", int(balance))
    return int(balance)


def _check_balanced(legs: Sequence[Leg]) -> None:
    if not legs:
        raise ValueError("a movement needs at least one leg")
    totals: dict[str, int] = defaultdict(int)
    for leg in legs:
        if leg.amount == 0:
            raise ValueError("a leg must move something")
        totals[leg.account.currency] += leg.amount
    unbalanced = {currency: total for currency, total in totals.items() if total != 0}
    if unbalanced:
        raise ValueError(f"a movement must sum to zero in each currency: {unbalanced}")


def _replayed(existing: LedgerTransaction, kind: str) -> PostResult:
    if existing.kind != kind:
        raise IdempotencyKeyReused(
            "This key was already used for another movement",
            details={"kind": existing.kind},
        )
    return PostResult(existing, created=False)


async def _find_account(
    session: AsyncSession, tenant_id: str, owner: str, name: str
) -> LedgerAccount | None:
    found: LedgerAccount | None = await session.scalar(
        select(LedgerAccount).where(
            LedgerAccount.tenant_id == tenant_id,
            LedgerAccount.owner == owner,
            LedgerAccount.name == name,
        )
    )
    return found


async def _find_transaction(
    session: AsyncSession, tenant_id: str, key: str
) -> LedgerTransaction | None:
    found: LedgerTransaction | None = await session.scalar(
        select(LedgerTransaction).where(
            LedgerTransaction.tenant_id == tenant_id,
            LedgerTransaction.idempotency_key == key,
        )
    )
    return found
