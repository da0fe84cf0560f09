"""Wallet bodies: balances, statements, adjustments and conversions.

Amounts are minor units inside; on the wire credits carry their currency's
decimals (``20.5``) and coins are whole numbers. Amounts sent in are parsed
exactly (a JSON number or a string), never through binary floats.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field

from hostplane.core.schemas import ApiInput, ApiModel

# The largest single movement a person may type (a typo guard, not a policy).
MAX_AMOUNT = Decimal("100000000")


class WalletOut(ApiModel):
    coins: int
    credits: int | float = Field(description="In the credits currency's decimals.")
    credits_currency: str


class TransactionOut(ApiModel):
    """One line of a wallet's statement."""

    id: str = Field(description="The entry's id.")
    transaction_id: str
    kind: str
    currency: Literal["coins", "credits"]
    amount: int | float = Field(description="Signed: positive came in, negative went out.")
    balance_after: int | float
    reference: str | None
    memo: str | None
    created_at: datetime


class BalanceAdjust(ApiInput):
    """An operator's correction, positive or negative, with its reason."""

    amount: Decimal = Field(
        ge=-MAX_AMOUNT, le=MAX_AMOUNT, description="Signed, in the currency's decimals."
    )
    currency: Literal["credits", "coins"]
    reason: str = Field(min_length=3, max_length=500)


class BalanceAdjusted(ApiModel):
    user_id: str
    transaction_id: str
    wallet: WalletOut


class ConvertIn(ApiInput):
    credits: Decimal = Field(gt=0, le=MAX_AMOUNT, description="Credits to turn into coins.")


class ConvertOut(ApiModel):
    transaction_id: str
    credits_spent: int | float
    coins_received: int
    rate: int = Field(description="Coins per whole credit.")
    wallet: WalletOut
