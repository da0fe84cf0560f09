"""Checking the ledger against itself: ``hostplane ledger verify``.

Two invariants: every transaction sums to zero in each currency, and every
account's cached balance equals the sum of its entries (and is not below zero
unless the account may go negative).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction


@dataclass
class LedgerReport:
    accounts: int = 0
    transactions: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify(session: AsyncSession) -> LedgerReport:
    """Every tenant's ledger (the platform's view: run it from an unscoped session)."""
    report = LedgerReport()
    report.transactions = int(
        await session.scalar(select(func.count()).select_from(LedgerTransaction)) or 0
    )
    unbalanced = await session.execute(
        select(LedgerEntry.transaction_id, LedgerEntry.currency, func.sum(LedgerEntry.amount))
        .group_by(LedgerEntry.transaction_id, LedgerEntry.currency)
        .having(func.sum(LedgerEntry.amount) != 0)
    )
    for transaction_id, currency, total in unbalanced:
        report.problems.append(
            f"transaction {transaction_id} does not sum to zero in {currency} ({total})"
        )
    sums = dict(
        (
            await session.execute(
                select(LedgerEntry.account_id, func.sum(LedgerEntry.amount)).group_by(
                    LedgerEntry.account_id
                )
            )
        ).all()
    )
    for account in await session.scalars(select(LedgerAccount).order_by(LedgerAccount.id)):
        report.accounts += 1
        total = int(sums.get(account.id) or 0)
        where = f"account {account.owner}/{account.name} ({account.id})"
        if account.balance != total:
            report.problems.append(
                f"{where} holds {account.balance} but its entries sum to {total}"
            )
        if account.balance < 0 and not account.allow_negative:
            report.problems.append(f"{where} is below zero ({account.balance})")
    return report
