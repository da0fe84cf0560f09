"""Money as integer minor units.

Amounts are stored and added as ``int`` minor units (cents, paise; coins are
whole units with zero decimals). Floats never take part in arithmetic: they
appear only at the JSON edge, where an amount is shown as a number with the
currency's decimals, and where a client's decimal input is parsed exactly.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# ISO 4217 exponents for the currencies the documents use, plus the platform's
# own earned currency. Anything else defaults to two decimals.
_DECIMALS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "INR": 2,
    "JPY": 0,
    "KRW": 0,
    "BHD": 3,
    "KWD": 3,
    "COINS": 0,
}


class MoneyError(ValueError):
    """An amount that cannot be represented exactly in minor units."""


def decimals(currency: str) -> int:
    """How many decimal places ``currency`` has."""
    return _DECIMALS.get(currency.upper(), 2)


def to_minor(amount: Decimal | int | str, currency: str) -> int:
    """Parse a major-unit amount (``"9.99"``) into minor units (``999``).

    Refuses amounts with more decimals than the currency allows instead of
    rounding them silently.
    """
    if isinstance(amount, float):
        raise MoneyError("amounts must not be floats; pass a string or a Decimal")
    try:
        value = Decimal(amount)
    except InvalidOperation as exc:
        raise MoneyError(f"not a number: {amount!r}") from exc
    if not value.is_finite():
        raise MoneyError(f"not a finite amount: {amount!r}")
    scaled = value.scaleb(decimals(currency))
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{amount} has more than {decimals(currency)} decimals for {currency}")
    return int(scaled)


def to_major(minor: int, currency: str) -> Decimal:
    """Minor units as an exact Decimal in major units (``999`` -> ``Decimal("9.99")``)."""
    places = decimals(currency)
    return (Decimal(minor).scaleb(-places)).quantize(
        Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN
    )


def to_json_number(minor: int, currency: str) -> int | float:
    """The value to put in a JSON document: an int for zero-decimal currencies."""
    places = decimals(currency)
    if places == 0:
        return minor
    # The float is only a rendering of an exact decimal with few places; it is
    # never read back into arithmetic.
    return float(to_major(minor, currency))
