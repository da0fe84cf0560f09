"""What people do to wallets beyond earning and paying: an operator's
adjustment, and turning credits into coins."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.ledger import service as ledger
from hostplane.commerce.ledger.models import LedgerTransaction
from hostplane.commerce.ledger.service import Leg
from hostplane.commerce.wallet import service as wallet
from hostplane.commerce.wallet.service import Currency
from hostplane.core.errors import ValidationFailed
from hostplane.core.ids import new_id
from hostplane.core.money import MoneyError, decimals, to_minor
from hostplane.core.principal import Principal
from hostplane.identity.users.service import get_user
from hostplane.platform.audit import service as audit

ADJUSTMENTS = "adjustments"
CONVERSION = "conversion"


def minor_amount(session: AsyncSession, amount: Decimal, currency: Currency, field: str) -> int:
    """``amount`` in minor units of ``currency``, or a 400 naming ``field``."""
    try:
        return to_minor(amount, wallet.currency_code(session, currency))
    except MoneyError as exc:
        raise ValidationFailed(
            str(exc), details={"fields": [{"field": field, "message": str(exc)}]}
        ) from None


async def adjust_balance(
    session: AsyncSession,
    principal: Principal,
    *,
    user_id: str,
    amount: Decimal,
    currency: Currency,
    reason: str,
) -> LedgerTransaction:
    """Add (positive) or take (negative) ``amount``; never below zero (402).

    The movement's memo and the audit entry both carry ``reason``.
    """
    user = await get_user(session, user_id)
    minor = minor_amount(session, amount, currency, "amount")
    if minor == 0:
        raise ValidationFailed(
            "An adjustment must move something",
            details={"fields": [{"field": "amount", "message": "must not be zero"}]},
        )
    result = await wallet.move(
        session,
        tenant_id=user.tenant_id,
        user_id=user.id,
        currency=currency,
        amount=minor,
        kind="admin.adjustment",
        key=f"adjustment:{new_id()}",
        system=ADJUSTMENTS,
        reference=f"user:{user.id}",
        memo=reason,
        actor_user_id=principal.user_id,
    )
    audit.record(
        session,
        action="wallet.adjust",
        resource_type="user",
        resource_id=user.id,
        metadata={
            "currency": currency,
            "amount": str(amount),
            "reason": reason,
            "transactionId": result.transaction.id,
        },
    )
    return result.transaction


@dataclass(frozen=True, slots=True)
class Conversion:
    transaction: LedgerTransaction
    credits_spent: int
    coins_received: int


async def convert_credits(
    session: AsyncSession,
    *,
    tenant_id: str,
    user_id: str,
    credits: Decimal,
    coins_per_credit: int,
) -> Conversion:
    """Spend credits for coins at ``coins_per_credit``; coins never turn back.

    Coins are whole: a fraction of a coin is not paid, and an amount worth
    less than one coin is refused.
    """
    if coins_per_credit <= 0:
        raise ValidationFailed("Converting credits to coins is turned off on this panel")
    spent = minor_amount(session, credits, "credits", "credits")
    code = wallet.credits_currency(session)
    coins = spent * coins_per_credit // 10 ** decimals(code)
    if coins <= 0:
        raise ValidationFailed(
            "That is worth less than one coin",
            details={"fields": [{"field": "credits", "message": "too small to convert"}]},
        )
    user_credits = await wallet.user_account(
        session, tenant_id=tenant_id, user_id=user_id, currency="credits"
    )
    user_coins = await wallet.user_account(
        session, tenant_id=tenant_id, user_id=user_id, currency="coins"
    )
    house_credits = await ledger.account(
        session, tenant_id=tenant_id, owner="system", name=f"{CONVERSION}:credits", currency=code
    )
    house_coins = await ledger.account(
        session,
        tenant_id=tenant_id,
        owner="system",
        name=f"{CONVERSION}:coins",
        currency=wallet.COINS_CODE,
    )
    result = await ledger.post(
        session,
        tenant_id=tenant_id,
        kind="conversion",
        key=f"conversion:{new_id()}",
        legs=[
            Leg(user_credits, -spent),
            Leg(house_credits, spent),
            Leg(house_coins, -coins),
            Leg(user_coins, coins),
        ],
        reference=f"user:{user_id}",
        memo=f"{credits} credits at {coins_per_credit} coins each",
        actor_user_id=user_id,
    )
    return Conversion(result.transaction, credits_spent=spent, coins_received=coins)
