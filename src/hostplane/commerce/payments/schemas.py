from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator

from hostplane.core.schemas import ApiInput, ApiModel

TopUpMethod = Literal["stripe", "upi"]


class TopUpIn(ApiInput):
    amount: Decimal = Field(
        gt=0,
        # Far above any gateway's limit; keeps absurd exponents out of arithmetic.
        le=Decimal(10**12),
        description='Credits to buy, in major units of the credits currency (10 or "9.99").',
    )
    gateway: TopUpMethod

    @field_validator("amount", mode="before")
    @classmethod
    def _exact(cls, value: object) -> object:
        # A JSON number arrives as a float; its shortest text ("9.99") is what
        # the client wrote, so it is read from that text, never as binary.
        if isinstance(value, bool):
            raise ValueError("give the amount as a number or a decimal string")
        if isinstance(value, float):
            return repr(value)
        return value


class TopUpOut(ApiModel):
    id: str
    gateway: TopUpMethod
    status: str
    amount: int | float = Field(description="In major units of `currency`.")
    amount_minor: int
    currency: str
    payment_url: str = Field(description="Send the user here to pay.")
    reference: str = Field(description="The gateway's session or payment link id.")
    created_at: datetime


class WebhookReceived(ApiModel):
    received: bool = True
    duplicate: bool = Field(description="The event was already received; nothing more was done.")
