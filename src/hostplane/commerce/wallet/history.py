"""A wallet's statement: its entries with the movements they belong to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction
from hostplane.commerce.wallet.service import CURRENCIES, Currency
from hostplane.core.pagination import PageMeta, PageParams, paginate


@dataclass(frozen=True, slots=True)
class StatementLine:
    entry: LedgerEntry
    transaction: LedgerTransaction
    currency: Currency


async def statement(
    session: AsyncSession,
    *,
    tenant_id: str,
    user_id: str,
    params: PageParams,
    currency: Currency | None = None,
    kind: str | None = None,
) -> tuple[list[StatementLine], PageMeta]:
    """The user's entries, newest first, filtered by currency and movement kind."""
    names = [currency] if currency is not None else list(CURRENCIES)
    accounts = {
        account.id: account
        for account in await session.scalars(
            select(LedgerAccount).where(
                LedgerAccount.tenant_id == tenant_id,
                LedgerAccount.owner == user_id,
                LedgerAccount.name.in_(names),
            )
        )
    }
    statement = (
        select(LedgerEntry)
        .where(LedgerEntry.account_id.in_(list(accounts)))
        .order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc())
    )
    if kind is not None:
        statement = statement.join(
            LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id
        ).where(LedgerTransaction.kind == kind)
    entries, meta = await paginate(session, statement, params)
    transactions = {
        transaction.id: transaction
        for transaction in await session.scalars(
            select(LedgerTransaction).where(
                LedgerTransaction.id.in_({entry.transaction_id for entry in entries})
            )
        )
    }
    lines = [
        StatementLine(
            entry=entry,
            transaction=transactions[entry.transaction_id],
            currency=_currency(accounts[entry.account_id].name),
        )
        for entry in entries
    ]
    return lines, meta


def _currency(name: str) -> Literal["coins", "credits"]:
    return "coins" if name == "coins" else "credits"
