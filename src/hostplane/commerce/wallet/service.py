"""Crediting and debiting a user's coins or credits.

Each function is one ledger movement between the user's account and a named
system account of the tenant (``rewards``, ``gateway:stripe``, ``sales``,
``conversion``, ``adjustments``), posted under the caller's idempotency key:
calling again with the same key moves nothing and returns the first movement.
Amounts are positive minor units; the direction is in the function's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.ledger import service as ledger
from hostplane.commerce.ledger.models import LedgerAccount
from hostplane.commerce.ledger.service import (
    IdempotencyKeyReused,
    InsufficientFunds,
    Leg,
    PostResult,
)
from hostplane.core.db.session import session_settings

__all__ = [
    "Balances",
    "Currency",
    "IdempotencyKeyReused",
    "InsufficientFunds",
    "PostResult",
    "balances",
    "credit",
    "credits_currency",
    "currency_code",
    "debit",
    "move",
    "reverse",
    "user_account",
]

Currency = Literal["coins", "credits"]
CURRENCIES: tuple[Currency, ...] = get_args(Currency)
COINS_CODE = "COINS"
DEFAULT_CREDITS_CURRENCY = "USD"


@dataclass(frozen=True, slots=True)
class Balances:
    coins: int
    credits: int


def credits_currency(session: AsyncSession) -> str:
    """The ISO code credits are kept in (setting ``economy.credits_currency``)."""
    settings = session_settings(session)
    if settings is None:
        return DEFAULT_CREDITS_CURRENCY
    return str(settings.economy.credits_currency)


def currency_code(session: AsyncSession, currency: Currency) -> str:
    """``COINS`` for coins, the credits currency for credits."""
    return COINS_CODE if currency == "coins" else credits_currency(session)


async def user_account(
    session: AsyncSession, *, tenant_id: str, user_id: str, currency: Currency
) -> LedgerAccount:
    return await ledger.account(
        session,
        tenant_id=tenant_id,
        owner=user_id,
        name=currency,
        currency=currency_code(session, currency),
    )


async def credit(
    session: AsyncSession,
    *,
    tenant_id: str,
    user_id: str,
    currency: Currency,
    amount: int,
    kind: str,
    key: str,
    source: str,
    reference: str | None = None,
    memo: str | None = None,
    actor_user_id: str | None = None,
) -> PostResult:
    """Add ``amount`` to the user's wallet, taken from the system account ``source``."""
    _positive(amount)
    return await move(
        session,
        tenant_id=tenant_id,
        user_id=user_id,
        currency=currency,
        amount=amount,
        kind=kind,
        key=key,
        system=source,
        reference=reference,
        memo=memo,
        actor_user_id=actor_user_id,
    )


async def debit(
    session: AsyncSession,
    *,
    tenant_id: str,
    user_id: str,
    currency: Currency,
    amount: int,
    kind: str,
    key: str,
    sink: str,
    reference: str | None = None,
    memo: str | None = None,
    actor_user_id: str | None = None,
) -> PostResult:
    """Take ``amount`` from the user's wallet into the system account ``sink``.

    Raises :class:`InsufficientFunds` (402) and moves nothing when the balance
    is smaller: a wallet never goes below zero.
    """
    _positive(amount)
    return await move(
        session,
        tenant_id=tenant_id,
        user_id=user_id,
        currency=currency,
        amount=-amount,
        kind=kind,
        key=key,
        system=sink,
        reference=reference,
        memo=memo,
        actor_user_id=actor_user_id,
    )


async def reverse(
    session: AsyncSession,
    *,
    tenant_id: str,
    original_key: str,
    key: str,
    kind: str = "refund",
    memo: str | None = None,
    actor_user_id: str | None = None,
) -> PostResult:
    """Undo the movement posted under ``original_key`` with its opposite legs.

    A movement is reversed at most once (a second reversal, under any key,
    returns the first). Reversing a credit the user has spent raises
    :class:`InsufficientFunds`.
    """
    original = await ledger.find_transaction(session, tenant_id=tenant_id, key=original_key)
    if original is None:
        raise LookupError(f"no movement was posted under {original_key!r}")
    entries = await ledger.entries_of(session, original.id)
    accounts = {
        account.id: account
        for account in await session.scalars(
            select(LedgerAccount).where(
                LedgerAccount.id.in_([entry.account_id for entry in entries])
            )
        )
    }
    legs = [Leg(accounts[entry.account_id], -entry.amount) for entry in entries]
    return await ledger.post(
        session,
        tenant_id=tenant_id,
        kind=kind,
        key=key,
        legs=legs,
        reference=original.reference,
        memo=memo,
        actor_user_id=actor_user_id,
        reverses_id=original.id,
    )


async def balances(session: AsyncSession, *, tenant_id: str, user_id: str) -> Balances:
    """The user's balances in minor units (zero for an account never used)."""
    rows = await session.execute(
        select(LedgerAccount.name, LedgerAccount.balance).where(
            LedgerAccount.tenant_id == tenant_id,
            LedgerAccount.owner == user_id,
            LedgerAccount.name.in_(CURRENCIES),
        )
    )
    found = {name: int(balance) for name, balance in rows}
    return Balances(coins=found.get("coins", 0), credits=found.get("credits", 0))


async def move(
    session: AsyncSession,
    *,
    tenant_id: str,
    user_id: str,
    currency: Currency,
    amount: int,
    kind: str,
    key: str,
    system: str,
    reference: str | None = None,
    memo: str | None = None,
    actor_user_id: str | None = None,
) -> PostResult:
    """Move a signed ``amount`` between the user's wallet and the system account
    ``system``: positive credits the user, negative debits (402 when short)."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
        raise ValueError(f"an amount must be a non-zero int of minor units, not {amount!r}")
    wallet = await user_account(session, tenant_id=tenant_id, user_id=user_id, currency=currency)
    # A system account holds one currency: "rewards:coins", "gateway:stripe:credits".
    other = await ledger.system_account(
        session, tenant_id=tenant_id, name=f"{system}:{currency}", currency=wallet.currency
    )
    return await ledger.post(
        session,
        tenant_id=tenant_id,
        kind=kind,
        key=key,
        legs=[Leg(wallet, amount), Leg(other, -amount)],
        reference=reference,
        memo=memo,
        actor_user_id=actor_user_id,
    )


def _positive(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"an amount must be a positive int of minor units, not {amount!r}")
